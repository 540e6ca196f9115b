#!/usr/bin/env bash
# Runs shellcheck over every shell script of the repository's own: the ones
# under hack/, test/, bench/ and .ci/, found by their #! line (sh, bash or
# dash, directly or through env) as well as by a .sh name, so scripts without
# an extension (hack/vm/guest/usernode-vm-boot, .ci/run) are not missed.
# testdata/ trees hold fixture files, not scripts, and are skipped.
# Exits non-zero if shellcheck reports anything; `make lint` runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v shellcheck >/dev/null || {
  echo "lint-shell: shellcheck not found (apt-get install shellcheck, or hack/install-deps.sh)" >&2
  exit 1
}
scripts=()
while IFS= read -r -d '' f; do
  first=$(head -n1 "$f" 2>/dev/null || true)
  if [[ $f == *.sh || $first =~ ^\#!.*[/\ ](ba|da)?sh([[:space:]]|$) ]]; then
    scripts+=("$f")
  fi
done < <(find hack test bench .ci -type d -name testdata -prune -o -type f -print0 | sort -z)
if [ ${#scripts[@]} -eq 0 ]; then
  echo "lint-shell: no shell scripts found" >&2
  exit 1
fi
echo "shellcheck: ${#scripts[@]} scripts"
shellcheck --external-sources "${scripts[@]}"
