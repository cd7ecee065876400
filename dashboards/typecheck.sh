#!/usr/bin/env bash
# Type-checks every dashboard JSON against npm @grafana/schema: each is
# wrapped as `... satisfies Dashboard` and compiled with `tsc --strict`.
# Usage: dashboards/typecheck.sh NODE_MODULES_DIR (deploy/check runs it).
set -euo pipefail
cd "$(dirname "$0")/.."
modules="$1"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ln -s "$modules" "$work/node_modules"
files=()
for f in dashboards/*.json; do
  name=$(basename "$f" .json | tr -c 'a-zA-Z0-9\n' '_')
  {
    echo 'import { type Dashboard, ThresholdsMode } from "@grafana/schema";'
    # JSON has the threshold mode as a string; the schema's TypeScript type
    # is a string enum, which no string literal satisfies: map the two
    # values to their enum members, and check everything else as it is.
    printf 'export const %s = %s satisfies Dashboard;\n' "$name" "$(sed \
      -e 's/"mode": "absolute"/"mode": ThresholdsMode.Absolute/' \
      -e 's/"mode": "percentage"/"mode": ThresholdsMode.Percentage/' "$f")"
  } > "$work/$name.ts"
  files+=("$work/$name.ts")
done
"$modules/.bin/tsc" --strict --noEmit --skipLibCheck --target es2020 \
  --module nodenext --moduleResolution nodenext "${files[@]}"
echo "dashboards: ${#files[@]} type-checked against @grafana/schema"
