# Installs componentize-py, which builds the Python example policy, when it
# is missing. Sourced by scripts/test.
set -euo pipefail
componentize_py_version=0.25.1
if ! componentize-py --version 2>/dev/null | grep -q "$componentize_py_version"; then
  echo "installing componentize-py $componentize_py_version (builds the Python example policy)" >&2
  python3 -m pip install --quiet --disable-pip-version-check "componentize-py==$componentize_py_version" >&2
fi
