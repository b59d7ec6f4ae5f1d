#!/usr/bin/env bash
# Checks the API description: installs the pinned tools (npm ci, skipped when
# node_modules already matches package-lock.json), lints openapi.yaml with
# Redocly (zero errors AND zero warnings required) and runs the response
# validator's tests. Exits non-zero on any failure.
#
# Usage: openapi/check.sh        (from anywhere)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

# Redocly would otherwise send usage telemetry and look for updates.
export REDOCLY_TELEMETRY=off
export REDOCLY_SUPPRESS_UPDATE_NOTICE=true
export NO_UPDATE_NOTIFIER=1

fail() {
    echo "openapi/check.sh: $*" >&2
    exit 1
}

command -v node >/dev/null || fail "node is not installed (Node >= 20.19 needed)"
command -v npm >/dev/null || fail "npm is not installed"
node -e '
const [major, minor] = process.versions.node.split(".").map(Number);
if (major < 20 || (major === 20 && minor < 19)) process.exit(1);
' || fail "Node $(node --version) is too old: @redocly/cli needs >= 20.19"

# npm ci wipes and reinstalls node_modules (slow), so it only runs when the
# lock file changed since the last successful install.
stamp=node_modules/.forkvm-lock.sha256
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$lock_sum" ]]; then
    echo "== npm ci"
    npm ci --no-audit --no-fund --loglevel=error >/dev/null || fail "npm ci failed"
    echo "$lock_sum" >"$stamp"
else
    echo "== npm ci: node_modules is up to date with package-lock.json, skipped"
fi

echo "== redocly lint openapi.yaml"
# Redocly exits 0 on warnings; read the totals from its JSON report so a
# warning fails too, and print the readable report only when there is one.
report=$(npx --no-install redocly lint openapi.yaml --format=json 2>/dev/null) || true
totals=$(node -e '
let text = "";
process.stdin.on("data", (c) => (text += c)).on("end", () => {
    try {
        const { errors, warnings } = JSON.parse(text).totals;
        console.log(`${errors} ${warnings}`);
    } catch {
        console.log("unparsable");
    }
});
' <<<"$report")
if [[ $totals != "0 0" ]]; then
    npx --no-install redocly lint openapi.yaml --format=codeframe 2>&1 | grep -v '[║╔╚]' >&2 || true
    fail "redocly lint: errors and warnings (errors warnings) = ${totals}"
fi
echo "openapi.yaml: 0 errors, 0 warnings"

echo "== validator tests"
node --test --test-reporter=dot validate-responses.test.mjs || fail "validate-responses tests failed"

echo "openapi/check.sh: all checks passed"
