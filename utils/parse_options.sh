#!/usr/bin/env bash
# Kaldi-style option parsing, sourced by run.sh scripts after they declare their options:
#
#   stage=0          # first stage to run
#   nj=2             # parallel jobs
#   . utils/parse_options.sh
#
# Every `--some-option VALUE` (or `--some-option=VALUE`) sets the declared shell variable `some_option`;
# an undeclared option is an error, so typos never pass silently. The declared options are the lines
# `name=default   # help` at the top of each file in the array `_sa_option_files` (default: the script
# itself), up to the first line that sources another file; utils/recipe.sh lists the recipe's run.sh and
# itself (and a part of the template in between, e.g. utils/recipe_sid.sh), so a recipe takes its own
# options and the template's. `--help` prints the script's header
# comment and every declared option with its default and help (the comment after it).
#
# Values are checked against the declared default, so a wrong value stops the script (exit 1, one line
# on stderr) instead of being half-used later:
#   - an option whose default is an integer (stage=0, nj=2, ...) takes an integer;
#   - an option whose default is true or false takes true or false.
# Positional arguments are refused: they are almost always a typo (`run.sh extra --stage 3` would otherwise
# stop parsing at `extra` and silently ignore every later option).

[ -n "${_sa_option_files+x}" ] || _sa_option_files=("$0")

# The option declarations of one file: "name<US>default<US>help" lines (US: the unit separator, \x1f,
# not a tab: `read` would merge the two tabs around an empty default).
_sa_declared() {
  awk '/^(\.|source)[[:space:]]/{exit} /^[a-z][a-z0-9_]*=/' "$1" |
    while IFS= read -r line; do
      name="${line%%=*}"; rest="${line#*=}"; value="${rest%%#*}"; help=""
      [[ "$rest" == *"#"* ]] && help="${rest#*#}"
      value="$(echo "$value" | sed 's/[[:space:]]*$//')"
      value="${value#\"}"; value="${value%\"}"
      printf '%s\x1f%s\x1f%s\n' "$name" "$value" "$(echo "$help" | sed 's/^ *//')"
    done
}
_sa_usage() {
  sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"
  local f first=true title
  for f in "${_sa_option_files[@]}"; do
    echo
    if [ "$first" = true ]; then echo "Options (default in brackets):"; first=false
    else  # the file's own "# Options of ... (" or ":" line names the group, e.g. "Options of every recipe"
      title="$(sed -n 's/^# \(Options of [^(:]*[^(: ]\).*/\1/p' "$f" | head -1)"
      echo "${title:-Options of every recipe} ($(basename "$(dirname "$f")")/$(basename "$f"), default in brackets):"
    fi
    _sa_declared "$f" | while IFS=$'\x1f' read -r name value help; do
      printf '  --%-18s [%s] %s\n' "${name//_/-}" "$value" "$help"
    done
  done
}
_sa_fail() { echo "$0: $*" >&2; exit 1; }

_sa_known=" "
for _sa_f in "${_sa_option_files[@]}"; do
  _sa_known+="$(_sa_declared "$_sa_f" | cut -d $'\x1f' -f1 | tr '\n' ' ')"
done

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
  if [[ "$_sa_known" != *" $_sa_var "* ]] || ! declare -p "$_sa_var" >/dev/null 2>&1; then
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
unset _sa_name _sa_value _sa_var _sa_default _sa_f _sa_known
true
