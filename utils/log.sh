#!/usr/bin/env bash
# Timestamped log lines for recipes: `log "stage 1: features"` prints
# `2026-11-24 01:40:00 (run.sh:57) stage 1: features` on stderr.
log() { echo "$(date '+%Y-%m-%d %H:%M:%S') ($(basename "${BASH_SOURCE[1]}"):${BASH_LINENO[0]}) $*" >&2; }
# The software and hardware of this run (speechattn-info), logged once at the start of every recipe.
log_environment() {
  local line
  speechattn-info | while IFS= read -r line; do echo "$(date '+%Y-%m-%d %H:%M:%S') (speechattn-info) $line" >&2; done
}
