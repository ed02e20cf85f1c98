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
#
# Values are checked against the declared default, so a wrong value stops the script (exit 1, one line
# on stderr) instead of being half-used later:
#   - an option whose default is an integer (stage=0, nj=2, ...) takes an integer;
#   - an option whose default is true or false takes true or false.
# Positional arguments are refused: they are almost always a typo (`run.sh extra --stage 3` would otherwise
# stop parsing at `extra` and silently ignore every later option).

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
_sa_fail() { echo "$0: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h) _sa_usage; exit 0 ;;
    --*=*) _sa_name="${1%%=*}"; _sa_value="${1#*=}"; shift ;;
    --*) _sa_name="$1"
         if [ $# -lt 2 ]; then _sa_fail "option $1 needs a value"; fi
         _sa_value="$2"; shift 2 ;;
    *) _sa_fail "unexpected argument '$1': options are '--name value' (see --help); nothing was run" ;;
  esac
  _sa_var="${_sa_name#--}"; _sa_var="${_sa_var//-/_}"
  if [[ ! "$_sa_var" =~ ^[a-z_][a-z0-9_]*$ ]] || ! declare -p "$_sa_var" >/dev/null 2>&1; then
    _sa_fail "unknown option $_sa_name (see --help)"
  fi
  _sa_default="${!_sa_var}"
  if [[ "$_sa_default" =~ ^-?[0-9]+$ ]] && [[ ! "$_sa_value" =~ ^-?[0-9]+$ ]]; then
    _sa_fail "option $_sa_name needs an integer, got '$_sa_value'"
  fi
  if [[ "$_sa_default" =~ ^(true|false)$ ]] && [[ ! "$_sa_value" =~ ^(true|false)$ ]]; then
    _sa_fail "option $_sa_name needs true or false, got '$_sa_value'"
  fi
  printf -v "$_sa_var" '%s' "$_sa_value"
done
unset _sa_name _sa_value _sa_var _sa_default
true
