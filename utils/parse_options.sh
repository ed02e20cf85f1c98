#!/usr/bin/env bash
# Kaldi-style option parsing, sourced by run.sh scripts after they declare their options:
#
#   stage=0          # first stage to run
#   nj=2             # parallel jobs
#   . utils/parse_options.sh
#
# Every `--some-option VALUE` (or `--some-option=VALUE`) sets the already-declared shell variable
# `some_option`; an undeclared option is an error, so typos never pass silently. `--help` prints the
# script's header comment and its declared options with their defaults (the comment after each one).
# Positional arguments are left in "$@".

_sa_script="${0}"
_sa_usage() {
  sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "${_sa_script}"
  echo
  echo "Options (default in brackets):"
  awk '/parse_options\.sh/{exit} /^[a-z_][a-z0-9_]*=/' "${_sa_script}" |
    while IFS= read -r line; do
      name="${line%%=*}"; rest="${line#*=}"; value="${rest%%#*}"; help=""
      [[ "$rest" == *"#"* ]] && help="${rest#*#}"
      printf '  --%-18s [%s] %s\n' "${name//_/-}" "$(echo "$value" | sed 's/[[:space:]]*$//')" "$(echo "$help" | sed 's/^ *//')"
    done
}

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h) _sa_usage; exit 0 ;;
    --*=*) _sa_name="${1%%=*}"; _sa_value="${1#*=}"; shift ;;
    --*) _sa_name="$1"
         if [ $# -lt 2 ]; then echo "$0: option $1 needs a value" >&2; exit 1; fi
         _sa_value="$2"; shift 2 ;;
    *) break ;;
  esac
  _sa_var="${_sa_name#--}"; _sa_var="${_sa_var//-/_}"
  if ! declare -p "$_sa_var" >/dev/null 2>&1 || [[ ! "$_sa_var" =~ ^[a-z_][a-z0-9_]*$ ]]; then
    echo "$0: unknown option $_sa_name (see --help)" >&2; exit 1
  fi
  printf -v "$_sa_var" '%s' "$_sa_value"
done
unset _sa_name _sa_value _sa_var
true
