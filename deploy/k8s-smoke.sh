#!/usr/bin/env bash
# make k8s-smoke: modelyard on a throwaway kind (or k3d) cluster, end to end. It builds the image
# from deploy/Containerfile, loads it into the cluster, starts a PostgreSQL there, installs the
# chart (its migration hook Job first), creates a key, deploys a model, sends an inference through
# the gateway, runs a pipeline, and prints PASS or FAIL.
#
# Needs: kind or k3d, docker or podman, kubectl, helm (make tools puts one in .tools/bin), and
# modelyard with scikit-learn on this machine (make's .venv). The cluster is deleted at the end
# unless K8S_SMOKE_KEEP=1 or it existed before. Other knobs: K8S_SMOKE_CLUSTER, IMAGE, HELM,
# MODELYARD, PYTHON.
#
# It has NOT been run: the machines this was written on have no container engine and no cluster.
# `bash -n` and shellcheck check it there (tests/deploy/test_k8s_smoke.py), nothing more.
set -euo pipefail

# Paths given relative to where it starts (make's .venv/bin/...) must survive the cd below.
absolute() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac }

missing=()
engine=$(command -v podman || command -v docker || true)
[ -n "$engine" ] || missing+=("docker or podman (to build the image)")
provider=""
if command -v kind >/dev/null; then
    provider=kind
elif command -v k3d >/dev/null; then
    provider=k3d
else
    missing+=("kind or k3d (for a throwaway cluster)")
fi
command -v kubectl >/dev/null || missing+=("kubectl")
here=${BASH_SOURCE[0]%/*}
[ "$here" != "${BASH_SOURCE[0]}" ] || here=.
root=$(cd "$here/.." && pwd)
helm=$(absolute "${HELM:-$(command -v helm || echo "$root/.tools/bin/helm")}")
[ -x "$helm" ] || missing+=("helm (make tools)")
modelyard=$(absolute "${MODELYARD:-$(command -v modelyard || echo "$root/.venv/bin/modelyard")}")
[ -x "$modelyard" ] || missing+=("the modelyard CLI (make .venv/.installed-dev)")
python=$(absolute "${PYTHON:-$root/.venv/bin/python}")
[ -x "$python" ] || missing+=("python with modelyard and scikit-learn (PYTHON=...)")
if [ ${#missing[@]} -gt 0 ]; then
    printf 'FAIL: k8s-smoke needs what this machine lacks:\n' >&2
    printf '  - %s\n' "${missing[@]}" >&2
    exit 2
fi

cluster=${K8S_SMOKE_CLUSTER:-modelyard-smoke}
namespace=modelyard
image=${IMAGE:-localhost/modelyard:smoke}
release=smoke
work=$(mktemp -d)
step="starting"
context=""
created_cluster=0
forwards=()

cleanup() {
    status=$?
    for pid in "${forwards[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ "$status" -ne 0 ]; then
        echo "FAIL: $step (work folder $work; K8S_SMOKE_KEEP=1 keeps the cluster)" >&2
        kubectl --context "$context" -n "$namespace" get pods,jobs 2>/dev/null || true
    fi
    if [ "$created_cluster" = 1 ] && [ "${K8S_SMOKE_KEEP:-0}" != 1 ]; then
        if [ "$provider" = kind ]; then
            kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
        else
            k3d cluster delete "$cluster" >/dev/null 2>&1 || true
        fi
    fi
    [ "$status" -ne 0 ] || rm -rf "$work"
}
trap cleanup EXIT

say() {
    step=$1
    echo "== $step"
}

k() { kubectl --context "$context" -n "$namespace" "$@"; }

say "building $image with $engine"
"$engine" build -f "$root/deploy/Containerfile" -t "$image" "$root"
"$engine" save -o "$work/image.tar" "$image"

say "a $provider cluster named $cluster"
if [ "$provider" = kind ]; then
    context=kind-$cluster
    if ! kind get clusters 2>/dev/null | grep -qx "$cluster"; then
        kind create cluster --name "$cluster" --wait 180s
        created_cluster=1
    fi
    kind load image-archive "$work/image.tar" --name "$cluster"
else
    context=k3d-$cluster
    if ! k3d cluster list "$cluster" >/dev/null 2>&1; then
        k3d cluster create "$cluster" --wait
        created_cluster=1
    fi
    k3d image import "$work/image.tar" --cluster "$cluster"
fi
kubectl --context "$context" create namespace "$namespace" --dry-run=client -o yaml |
    kubectl --context "$context" apply -f -

say "PostgreSQL in the cluster, and the database Secret the chart reads"
k apply -f - <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: postgres}
spec:
  selector: {matchLabels: {app: postgres}}
  template:
    metadata: {labels: {app: postgres}}
    spec:
      containers:
        - name: postgres
          image: postgres:16
          env: [{name: POSTGRES_HOST_AUTH_METHOD, value: trust}]
          ports: [{containerPort: 5432}]
          readinessProbe: {exec: {command: [pg_isready, -U, postgres]}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: postgres}
spec:
  selector: {app: postgres}
  ports: [{port: 5432}]
EOF
k rollout status deploy/postgres --timeout=300s
k create secret generic modelyard-db \
    --from-literal=url="postgresql+psycopg://postgres@postgres.$namespace.svc:5432/postgres" \
    --dry-run=client -o yaml | k apply -f -

say "helm install (the migration hook Job runs first)"
"$helm" upgrade --install "$release" "$root/deploy/helm/modelyard" \
    --kube-context "$context" --namespace "$namespace" \
    --set image.repository="${image%:*}" --set image.tag="${image##*:}" \
    --set image.pullPolicy=Never \
    --set database.existingSecret=modelyard-db \
    --set teamNamespaces.team="$namespace" \
    --wait=false --timeout 10m
api=$release-modelyard-api
k rollout status "deploy/$api" --timeout=300s

say "the admin key, and the gateway's Secret made from it"
admin_key=$(k exec "deploy/$api" -- cat /data/admin.key)
k create secret generic modelyard-gateway-key --from-literal=api-key="$admin_key" \
    --dry-run=client -o yaml | k apply -f -
k rollout status "deploy/$release-modelyard-gateway" --timeout=300s

say "port-forwards to the API and the gateway"
k port-forward "svc/$api" 18700:8700 >"$work/api-forward.log" 2>&1 &
forwards+=($!)
k port-forward "svc/$release-modelyard-gateway" 18701:8701 >"$work/gateway-forward.log" 2>&1 &
forwards+=($!)
export MODELYARD_URL=http://127.0.0.1:18700 MODELYARD_API_KEY=$admin_key
gateway=http://127.0.0.1:18701
for _ in $(seq 60); do
    curl -fsS "$MODELYARD_URL/api/v1/health/leader" >/dev/null 2>&1 && break
    sleep 1
done
curl -fsS "$MODELYARD_URL/api/v1/health/leader" >/dev/null

say "a namespace and a key for the client"
"$modelyard" namespaces create team
client_key=$("$modelyard" keys create smoke-client --role team=invoker | tail -n 1)

say "a model pushed and deployed"
cd "$work"
"$python" - <<'EOF'
from pathlib import Path

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

features, labels = load_iris(return_X_y=True)
Path("iris").mkdir(exist_ok=True)
joblib.dump(LogisticRegression(max_iter=1000).fit(features, labels), "iris/model.joblib")
EOF
cat >request.json <<'EOF'
{"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32",
             "data": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}]}
EOF
"$modelyard" models push ./iris team/iris --runtime sklearn --sample request.json --alias production
"$modelyard" deployments create team/iris --model iris@production --wait

say "an inference through the gateway"
answer=$(curl -fsS --retry 30 --retry-delay 2 --retry-all-errors \
    -H "Authorization: Bearer $client_key" -d @request.json \
    "$gateway/team/iris/v2/models/iris/infer")
echo "$answer"
grep -q '"outputs"' <<<"$answer"

say "a pipeline run"
cat >smoke_pipeline.py <<'EOF'
from modelyard.pipelines import pipeline, step


@step
def greet(name: str) -> str:
    return f"hello {name}"


@pipeline
def smoke(name: str = "kubernetes") -> None:
    greet(name=name)
EOF
PYTHONPATH=$work "$modelyard" pipelines register smoke_pipeline:smoke -n team
"$modelyard" pipelines run smoke -n team --wait

step="done"
echo "PASS: the chart installed on $provider, a model served through the gateway, a pipeline ran"
