# shellcheck shell=bash
# The progress lines of the harness scripts (make setup, make images, make demo) and of .ci/run,
# so every log reads the same. Source it with
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# and set harness_tag to the word the lines carry after "== " (setup, images, demo, ci).
# Sourcing defines the functions below and records the time the clocks count from; nothing else.
# Every function returns 0 and reads unset arguments as empty, so each is safe under
# `set -euo pipefail`; they print to stdout (redirect a call with >&2 for stderr).

harness_started=$(date +%s)

# since [START]: prints the whole seconds from START (epoch seconds; default: when this file was
# sourced) to now, e.g. `42`. For "... in $(since "$t")s" and similar text.
since() { echo "$(( $(date +%s) - ${1:-$harness_started} ))"; }

# note TEXT...: one line `== TAG: TEXT` (make images: one per image built or pushed).
note() { printf '== %s: %s\n' "${harness_tag:-harness}" "$*"; }

# step TEXT...: a blank line, then `== TAG: TEXT` (make setup: a step's header, followed by the
# step's skip or elapsed line).
step() { printf '\n'; note "$@"; }

# say TEXT...: `== TAG: [  42s] TEXT`, the seconds since sourcing right-aligned in four columns
# (make demo: every progress line, so a slow stage shows in the log).
say() { note "$(printf '[%4ss]' "$(since)") $*"; }

# skip TEXT...: `   skipped: TEXT`, under a step whose result is already there (TEXT says what).
skip() { printf '   skipped: %s\n' "$*"; }

# elapsed START [VERB]: `   VERB in 42s`, under a step that did its work; START is the step's
# `date +%s`, VERB is `done` unless given (e.g. `built`).
elapsed() { printf '   %s in %ss\n' "${2:-done}" "$(since "${1:-}")"; }
