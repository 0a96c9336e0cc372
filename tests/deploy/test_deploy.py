"""deploy/ validated offline: no Docker engine, no cluster, no network.

- docker-compose.yml against the compose specification (check-jsonschema's vendored schema);
- the Kubernetes manifests against Kubernetes' own schemas (kubernetes-validate, strict: unknown fields
  fail), and the KEDA ScaledObject against KEDA's CRD schema, vendored in tests/deploy/schemas/;
- each validator is shown a broken copy too, so a validator that accepts anything fails the test;
- the Dockerfile, compose file and manifests against the code: the entrypoint is the console script,
  every command they run is a real CLI command, every environment variable name is one chipclear reads
  (chipclear.config.ENVIRONMENT), the probes are the worker's health paths on its health port;
- no secret in any file: passwords are interpolated (compose) or come from a Secret (Kubernetes).
"""

from __future__ import annotations

import copy
import importlib
import json
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import typer.main
import yaml

from chipclear.config import DEFAULT_TASK_QUEUE, ENVIRONMENT

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = DEPLOY / "docker-compose.yml"
K8S = DEPLOY / "k8s"
KEDA_SCALEDOBJECT_CRD = Path(__file__).parent / "schemas" / "keda.sh_scaledobjects.yaml"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"

# The oldest Kubernetes release these manifests promise to work on; kubernetes-validate bundles its schemas.
KUBERNETES_VERSION = "1.33.0"
IMAGE = "chipclear-worker"
SECRET = "chipclear-secrets"
CONFIGMAP = "chipclear-config"
RUN_AS_USER = 10001

# The temporal scaler's trigger metadata, as documented at https://keda.sh/docs/2.22/scalers/temporal/
# (and 2.17-2.21). A misspelt optional key would silently fall back to its default: any other key fails.
KEDA_TEMPORAL_METADATA = {
    "endpoint",
    "endpointFromEnv",
    "namespace",
    "activationTargetQueueSize",
    "targetQueueSize",
    "taskQueue",
    "queueTypes",
    "buildId",
    "selectAllActive",
    "selectUnversioned",
    "workerDeploymentName",
    "workerDeploymentBuildId",
    "includeRunningWorkflowCount",
    "workflowTaskQueueForCount",
    "apiKeyFromEnv",
    "minConnectTimeout",
    "unsafeSsl",
    "tlsServerName",
    "enableTLS",
}
KEDA_TEMPORAL_AUTH_PARAMETERS = {"apiKey", "ca", "cert", "key", "keyPassword"}

# Names that chipclear, Temporal's client or libpq would read. Anything with the prefix in deploy/ must be
# a key of ENVIRONMENT; a name ending in `_` (TEMPORAL_TLS_*) is a prefix of at least one.
ENV_NAME = re.compile(r"\b(?:CHIPCLEAR|TEMPORAL)_[A-Z0-9_]*|\bPG[A-Z]+\b")
CODE_ENV_NAME = re.compile(r"CHIPCLEAR_[A-Z_]+")
SECRET_KEY = re.compile(r"(?i)password|passwd|pwd|secret|token|api_?key|codec_keys")
# Keys whose value names a Secret (or a compose secret) rather than holding one.
SECRET_REFERENCES = frozenset({"secretName"})
# `${NAME:?message}`: compose stops when NAME is unset. `${NAME:-}`: optional, empty when unset.
REQUIRED_INTERPOLATION = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]+\}$")
OPTIONAL_INTERPOLATION = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:-\}$")


# -- loading -----------------------------------------------------------------------------------------------
def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_files() -> list[Path]:
    """Every manifest under deploy/k8s, the kustomizations themselves aside."""
    return sorted(path for path in K8S.rglob("*.yaml") if path.name != "kustomization.yaml")


def k8s_documents() -> list[dict[str, Any]]:
    return [doc for path in k8s_files() for doc in documents(path)]


def k8s_object(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        doc
        for doc in k8s_documents()
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''} in deploy/k8s, found {len(found)}"
    return found[0]


def configmap() -> dict[str, str]:
    data: dict[str, str] = k8s_object("ConfigMap", CONFIGMAP)["data"]
    return data


def deployment() -> dict[str, Any]:
    return k8s_object("Deployment", "chipclear-worker")


def worker_container() -> dict[str, Any]:
    container: dict[str, Any]
    (container,) = [
        c for c in deployment()["spec"]["template"]["spec"]["containers"] if c["name"] == "worker"
    ]
    return container


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in k8s_documents():
        if doc["kind"] in {"Deployment", "Job"}:
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())  # merge keys (<<) resolved
    return loaded


def chipclear_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose()["services"].items()
        if service.get("image", "").split(":")[0] == IMAGE
    }


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # also inside a continuation, where Docker drops comment and empty lines too
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        pending += stripped
        keyword, _, arguments = pending.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "Dockerfile ends inside a continuation line"
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in final_stage():
        if keyword == "ENV":
            for token in shlex.split(arguments):
                name, _, value = token.partition("=")
                env[name] = value
    return env


def dockerfile_json(keyword: str) -> list[str]:
    (arguments,) = [arguments for kw, arguments in final_stage() if kw == keyword]
    value: list[str] = json.loads(arguments)  # the exec form: no shell between Docker and chipclear
    return value


def health() -> Any:
    # Imported by name: the module arrives with the worker's health endpoints.
    return importlib.import_module("chipclear.health")


@cache
def cli() -> Any:
    """The CLI as click sees it (typer >= 0.26 carries its own copy of click, so no isinstance here)."""
    from chipclear.cli.main import app

    return typer.main.get_command(app)


def resolve(argv: list[str]) -> Any:
    """The CLI command `chipclear ARGV` runs; its options must parse too."""
    command = cli()
    words = list(argv)
    path = ["chipclear"]
    while hasattr(command, "commands"):  # a group: the next word names a subcommand
        assert words, f"`{' '.join(path)}` is a group of commands, not a command"
        word = words.pop(0)
        sub = command.commands.get(word)
        assert sub is not None, f"`chipclear {' '.join(argv)}`: {' '.join(path)} has no command {word!r}"
        command, path = sub, [*path, word]
    command.make_context(" ".join(path), words)  # raises on an unknown option or a missing argument
    return command


def check_jsonschema(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert CHECK_JSONSCHEMA.exists(), f"{CHECK_JSONSCHEMA} missing: pip install -e '.[dev]'"
    return subprocess.run(
        [str(CHECK_JSONSCHEMA), *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) of every mapping, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key), value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


# -- compose -----------------------------------------------------------------------------------------------
def test_compose_file_matches_the_compose_specification() -> None:
    result = check_jsonschema("--builtin-schema", "vendor.compose-spec", COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda doc: doc["services"]["worker"].update(replica=2), id="unknown key"),
        pytest.param(
            lambda doc: doc["services"]["worker"]["depends_on"]["migrate"].update(condition="completed"),
            id="unknown depends_on condition",
        ),
        pytest.param(
            lambda doc: doc["services"]["temporal"]["healthcheck"].update(intervall="5s"), id="misspelt key"
        ),
        pytest.param(
            lambda doc: doc["services"]["temporal"].update(ports="7233:7233"), id="ports not a list"
        ),
    ],
)
def test_the_compose_validator_rejects_a_broken_copy(tmp_path: Path, change: Any) -> None:
    broken = compose()
    change(broken)
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(broken))
    result = check_jsonschema("--builtin-schema", "vendor.compose-spec", path)
    assert result.returncode != 0, "check-jsonschema accepted a broken compose file"


def test_compose_runs_migrations_and_setup_before_two_draining_workers() -> None:
    services = compose()["services"]
    worker = services["worker"]
    assert worker["deploy"]["replicas"] >= 2
    assert worker["depends_on"] == {
        "temporal": {"condition": "service_healthy"},
        "eventstore": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
        "setup": {"condition": "service_completed_successfully"},
    }
    assert services["migrate"]["depends_on"] == {"eventstore": {"condition": "service_healthy"}}
    assert services["setup"]["depends_on"] == {"temporal": {"condition": "service_healthy"}}
    for name in ("temporal", "temporal-db", "eventstore"):
        assert "test" in services[name]["healthcheck"], f"{name} needs a healthcheck for service_healthy"
    for name in ("migrate", "setup"):
        assert services[name]["restart"] == "no", f"{name} is a one-shot"
    grace = re.fullmatch(r"(\d+)s", worker["stop_grace_period"])
    assert grace and int(grace[1]) >= 30, "workers need time to drain in-flight tasks after SIGTERM"
    for name, service in chipclear_services().items():
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}, name
        built_from = COMPOSE.parent / service["build"]["context"] / service["build"]["dockerfile"]
        assert built_from.resolve() == DOCKERFILE, name


def test_compose_pins_its_images_and_runs_temporal_on_postgresql() -> None:
    services = compose()["services"]
    for name, service in services.items():
        image, _, tag = service["image"].partition(":")
        assert tag and tag != "latest", f"{name}: pin {image} to a version"
    temporal = services["temporal"]
    assert re.fullmatch(r"temporalio/auto-setup:1\.2\d\.\d+", temporal["image"])
    assert temporal["environment"]["DB"] == "postgres12"
    assert temporal["environment"]["POSTGRES_SEEDS"] == "temporal-db"
    assert services["temporal-db"]["image"].startswith("postgres:")
    assert re.fullmatch(r"temporalio/ui:\d+\.\d+\.\d+", services["temporal-ui"]["image"])
    assert services["temporal-ui"]["environment"]["TEMPORAL_ADDRESS"] == "temporal:7233"


def test_compose_event_store_url_names_the_eventstore_service_without_its_password() -> None:
    services = compose()["services"]
    eventstore = services["eventstore"]["environment"]
    assert services["eventstore"]["image"] == "postgres:15"
    for name, service in chipclear_services().items():
        env = service["environment"]
        url = urlsplit(env["CHIPCLEAR_EVENT_STORE"])
        assert url.scheme == "postgresql", name
        assert url.password is None, f"{name}: the password goes in PGPASSWORD, never in the URL"
        assert (url.hostname, url.port) == ("eventstore", 5432), name
        assert url.username == eventstore["POSTGRES_USER"], name
        assert url.path.lstrip("/") == eventstore["POSTGRES_DB"], name
        # The same variable sets the server's password and the client's.
        assert env["PGPASSWORD"] == eventstore["POSTGRES_PASSWORD"], name
        assert env["TEMPORAL_ADDRESS"] == "temporal:7233", name
        assert env["CHIPCLEAR_TASK_QUEUE"] == DEFAULT_TASK_QUEUE, name


def test_compose_passwords_come_only_from_required_interpolation() -> None:
    for key, value in walk(compose()):
        if SECRET_KEY.search(key) and isinstance(value, str | int) and not isinstance(value, bool):
            value = str(value)
            if "CODEC_KEYS" in key:  # optional: no keys, no encryption
                assert REQUIRED_INTERPOLATION.match(value) or OPTIONAL_INTERPOLATION.match(value), key
            else:
                assert REQUIRED_INTERPOLATION.match(value), f"{key}: {value!r} must be ${{VAR:?message}}"


# -- Kubernetes --------------------------------------------------------------------------------------------
def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = documents(K8S / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    listed = {K8S / name for name in kustomization["resources"]}
    assert all(path.exists() for path in listed), listed
    top_level = {path for path in k8s_files() if path.parent == K8S}
    assert listed == top_level, "deploy/k8s files and kustomization resources differ"
    assert [image["name"] for image in kustomization["images"]] == [IMAGE]
    (component,) = documents(K8S / "temporal-cloud" / "kustomization.yaml")
    assert component["kind"] == "Component"
    assert all((K8S / "temporal-cloud" / name).exists() for name in component["resources"])


@pytest.mark.parametrize("path", k8s_files(), ids=lambda path: str(path.relative_to(K8S)))
def test_manifest_is_valid_kubernetes(path: Path) -> None:
    docs = documents(path)
    assert docs, f"{path} is empty"
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # custom resources: below, against KEDA's CRD
        # Strict: an unknown or misspelt field fails, as `kubectl apply` (server-side, strict) would.
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            lambda pod: pod["containers"][0]["readinessProbe"]["httpGet"].update(pth="/readyz"),
            id="unknown field",
        ),
        pytest.param(
            lambda pod: pod.update(terminationGracePeriodSeconds="sixty"), id="string for an integer"
        ),
        pytest.param(lambda pod: pod["containers"][0].pop("name"), id="container without a name"),
    ],
)
def test_the_kubernetes_validator_rejects_a_broken_copy(change: Any) -> None:
    broken = copy.deepcopy(deployment())
    change(broken["spec"]["template"]["spec"])
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused, as the API server's strict field validation does."""
    if isinstance(schema, dict):
        schema = {key: strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [strict(item) for item in schema]
    return schema


@cache
def scaledobject_validator() -> Any:
    (crd,) = documents(KEDA_SCALEDOBJECT_CRD)
    assert crd["spec"]["names"]["kind"] == "ScaledObject"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema = strict(version["schema"]["openAPIV3Schema"])
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def scaledobject() -> dict[str, Any]:
    return k8s_object("ScaledObject", "chipclear-worker")


def test_scaledobject_matches_kedas_crd() -> None:
    scaled = scaledobject()
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    scaledobject_validator().validate(scaled)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda spec: spec.update(minReplicas=2), id="unknown field"),
        pytest.param(
            lambda spec: spec["triggers"][0]["metadata"].update(targetQueueSize=10), id="number in metadata"
        ),
        pytest.param(lambda spec: spec.pop("scaleTargetRef"), id="no scale target"),
    ],
)
def test_the_scaledobject_validator_rejects_a_broken_copy(change: Any) -> None:
    broken = copy.deepcopy(scaledobject())
    change(broken["spec"])
    with pytest.raises(jsonschema.ValidationError):
        scaledobject_validator().validate(broken)


def test_scaledobject_watches_the_workers_task_queue() -> None:
    spec = scaledobject()["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "chipclear-worker",
    }
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert "replicas" not in deployment()["spec"], "the ScaledObject owns the replica count"
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "temporal"
    metadata = trigger["metadata"]
    assert set(metadata) <= KEDA_TEMPORAL_METADATA, set(metadata) - KEDA_TEMPORAL_METADATA
    assert metadata["taskQueue"] == configmap()["CHIPCLEAR_TASK_QUEUE"]
    assert metadata["endpoint"] == configmap()["TEMPORAL_ADDRESS"]
    assert metadata["namespace"] == configmap()["TEMPORAL_NAMESPACE"]
    assert set(metadata["queueTypes"].split(",")) <= {"workflow", "activity", "nexus"}
    assert int(metadata["targetQueueSize"]) > 0
    assert int(metadata["activationTargetQueueSize"]) >= 0


def test_temporal_cloud_component_authenticates_keda_with_the_workers_api_key() -> None:
    auth = k8s_object("TriggerAuthentication")
    assert auth["apiVersion"] == "keda.sh/v1alpha1"
    assert set(auth["spec"]) == {"secretTargetRef"}
    for ref in auth["spec"]["secretTargetRef"]:
        assert set(ref) == {"parameter", "name", "key"}
        assert ref["parameter"] in KEDA_TEMPORAL_AUTH_PARAMETERS
        assert ref["name"] == SECRET
        assert ref["key"] in ENVIRONMENT, "Secret keys are named after the variables they fill"
    (component,) = documents(K8S / "temporal-cloud" / "kustomization.yaml")
    (patch,) = [p for p in component["patches"] if p["target"]["kind"] == "ScaledObject"]
    assert patch["target"]["name"] == scaledobject()["metadata"]["name"]
    (operation,) = yaml.safe_load(patch["patch"])
    assert operation["path"] == "/spec/triggers/0/authenticationRef"
    assert operation["value"] == {"name": auth["metadata"]["name"]}


def test_worker_probes_are_the_health_endpoints_on_the_health_port() -> None:
    container = worker_container()
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    health_port = int(configmap()["CHIPCLEAR_HEALTH_PORT"])
    assert health_port == int(dockerfile_env()["CHIPCLEAR_HEALTH_PORT"])
    assert (
        ports["metrics"]
        == int(configmap()["CHIPCLEAR_METRICS_PORT"])
        == int(dockerfile_env()["CHIPCLEAR_METRICS_PORT"])
    )
    paths = {"readinessProbe": health().READINESS_PATH, "livenessProbe": health().LIVENESS_PATH}
    paths["startupProbe"] = health().LIVENESS_PATH
    for probe, path in paths.items():
        http = container[probe]["httpGet"]
        assert http["path"] == path, probe
        port = ports[http["port"]] if isinstance(http["port"], str) else http["port"]
        assert port == health_port, probe
    assert health().READINESS_PATH != health().LIVENESS_PATH


def test_worker_drains_and_runs_unprivileged() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 30, "SIGTERM drains in-flight tasks first"
    assert deployment()["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    selector = deployment()["spec"]["selector"]["matchLabels"]
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    pdb = k8s_object("PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    service = k8s_object("Service")
    assert service["spec"]["selector"] == selector
    container_ports = {port["name"] for port in worker_container()["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= container_ports


@pytest.mark.parametrize(
    "name", ["Deployment/chipclear-worker", "Job/chipclear-migrate", "Job/chipclear-setup"]
)
def test_pods_run_the_image_as_its_non_root_user_on_a_read_only_root(name: str) -> None:
    pod = dict(pod_specs())[name]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == RUN_AS_USER == dockerfile_uid()
    assert pod["automountServiceAccountToken"] is False
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    for container in pod["containers"]:
        assert container["image"] == IMAGE, "kustomization.yaml sets the registry and tag"
        assert "command" not in container, "the image's ENTRYPOINT is chipclear; args pick the command"
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert container["envFrom"] == [{"configMapRef": {"name": CONFIGMAP}}]
        # A read-only root: CHIPCLEAR_HOME must sit on a writable emptyDir.
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        home = configmap()["CHIPCLEAR_HOME"]
        assert any(home.startswith(path + "/") and "emptyDir" in vol for path, vol in mounts.items()), home


def test_secrets_come_from_the_secret_and_only_it() -> None:
    required = {"PGPASSWORD"}
    optional = {"CHIPCLEAR_CODEC_KEYS", "TEMPORAL_API_KEY"}
    for name, pod in pod_specs():
        for container in pod["containers"]:
            for env in container.get("env", []):
                assert "value" not in env or not SECRET_KEY.search(env["name"]), f"{name}: {env['name']}"
                ref = env["valueFrom"]["secretKeyRef"]
                assert ref["name"] == SECRET, name
                assert ref["key"] == env["name"], "Secret keys are named after the variables they fill"
                assert env["name"] in required | optional, env["name"]
                assert ref.get("optional", False) == (env["name"] in optional), env["name"]
    env_names = {env["name"] for env in worker_container()["env"]}
    assert env_names == required | optional
    assert not any(SECRET_KEY.search(key) for key in configmap()), "secrets do not go in the ConfigMap"
    url = urlsplit(configmap()["CHIPCLEAR_EVENT_STORE"])
    assert url.scheme == "postgresql" and url.username and url.password is None


def test_no_secret_is_committed_under_deploy() -> None:
    for doc in k8s_documents():
        assert doc["kind"] != "Secret", "Secrets are created in the cluster, never committed"
    for doc in [compose(), *k8s_documents()]:
        for key, value in walk(doc):
            if key in SECRET_REFERENCES:
                continue  # the name of a Secret object created in the cluster, not a secret's value
            if SECRET_KEY.search(key) and isinstance(value, str | int) and not isinstance(value, bool):
                assert REQUIRED_INTERPOLATION.match(str(value)) or OPTIONAL_INTERPOLATION.match(str(value)), (
                    f"{key}: a literal secret"
                )
    assert not [name for name in dockerfile_env() if SECRET_KEY.search(name)], "no secret in the image"


# -- the image ---------------------------------------------------------------------------------------------
def dockerfile_uid() -> int:
    (user,) = [arguments for keyword, arguments in final_stage() if keyword == "USER"]
    uid = user.split(":")[0]
    assert uid.isdigit(), "a numeric USER, so Kubernetes' runAsNonRoot can verify it"
    return int(uid)


def test_image_is_multi_stage_slim_and_non_root() -> None:
    instructions = dockerfile()
    bases = [arguments.split()[0] for keyword, arguments in instructions if keyword == "FROM"]
    assert len(bases) >= 2, "build in one stage, run in another"
    assert all(re.fullmatch(r"python:3\.11-slim(-\w+)?", base) for base in bases), bases
    assert any(kw == "COPY" and arguments.startswith("--from=") for kw, arguments in final_stage())
    assert dockerfile_uid() == RUN_AS_USER != 0
    keywords = [keyword for keyword, _ in final_stage()]
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    assert "ADD" not in [keyword for keyword, _ in instructions], "COPY, not ADD"


def test_image_entrypoint_is_the_console_script_and_its_command_exists() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert dockerfile_json("ENTRYPOINT") == ["chipclear"]
    assert scripts["chipclear"] == "chipclear.cli.main:main"
    assert dockerfile_json("CMD") == ["worker"]
    resolve(dockerfile_json("CMD"))


def test_image_exposes_the_health_and_metrics_ports_and_checks_liveness() -> None:
    env = dockerfile_env()
    exposed = {
        int(port.split("/")[0])
        for kw, arguments in final_stage()
        if kw == "EXPOSE"
        for port in arguments.split()
    }
    assert exposed == {int(env["CHIPCLEAR_HEALTH_PORT"]), int(env["CHIPCLEAR_METRICS_PORT"])}
    (check,) = [arguments for keyword, arguments in final_stage() if keyword == "HEALTHCHECK"]
    assert "urllib.request" in check, "slim has no curl"
    assert f"{health().LIVENESS_PATH}'" in check
    assert "CHIPCLEAR_HEALTH_PORT" in check


def test_image_copies_what_the_package_is_built_from() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    copied = {
        source.rstrip("/")
        for keyword, arguments in dockerfile()
        if keyword == "COPY" and not arguments.startswith("--from=")
        for source in arguments.split()[:-1]
    }
    needed = {project["project"]["readme"], "pyproject.toml"}
    needed |= {f"{module}.py" for module in project["tool"]["setuptools"]["py-modules"]}
    needed |= {
        pattern.rstrip("*") for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert needed <= copied, needed - copied
    assert all((ROOT / source).exists() for source in copied)
    ignored = {line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip()}
    assert not copied & ignored, "the build context must hold what the Dockerfile copies"
    assert {".git", ".venv", ".chipclear", "test-artifacts", "**/__pycache__", ".mypy_cache"} <= ignored


# -- names and commands against the code -------------------------------------------------------------------
def test_every_variable_name_in_deploy_is_one_chipclear_reads() -> None:
    unknown: set[str] = set()
    for path in sorted(p for p in DEPLOY.rglob("*") if p.is_file()):
        for name in ENV_NAME.findall(path.read_text()):
            known = (
                any(key.startswith(name) for key in ENVIRONMENT)
                if name.endswith("_")
                else name in ENVIRONMENT
            )
            if not known:
                unknown.add(f"{path.relative_to(ROOT)}: {name}")
    assert not unknown, "not in chipclear.config.ENVIRONMENT:\n" + "\n".join(sorted(unknown))


def test_every_chipclear_variable_the_code_reads_is_catalogued() -> None:
    sources = [
        ROOT / "worker.py",
        *(p for d in ("chipclear", "workflows", "activities") for p in (ROOT / d).rglob("*.py")),
    ]
    unknown = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in sources
        for name in CODE_ENV_NAME.findall(path.read_text())
        if name not in ENVIRONMENT
    }
    assert not unknown, "add these to chipclear.config.ENVIRONMENT:\n" + "\n".join(sorted(unknown))


def commands() -> list[tuple[str, list[str]]]:
    found = [("Dockerfile CMD", dockerfile_json("CMD"))]
    for name, service in chipclear_services().items():
        found.append((f"compose {name}", service["command"]))
    for name, pod in pod_specs():
        for container in pod["containers"]:
            if container["image"] == IMAGE:
                found.append((f"k8s {name}", container["args"]))
    return found


def test_deploy_runs_the_worker_the_migrations_and_setup() -> None:
    argvs = {tuple(argv) for _, argv in commands()}
    assert {("worker",), ("store", "migrate"), ("setup",)} <= argvs
    assert {name for name, argv in commands() if argv == ["store", "migrate"]} == {
        "compose migrate",
        "k8s Job/chipclear-migrate",
    }


@pytest.mark.parametrize(("where", "argv"), commands(), ids=[where for where, _ in commands()])
def test_every_command_deploy_runs_is_a_real_cli_command(where: str, argv: list[str]) -> None:
    resolve(argv)


def test_the_command_resolver_rejects_what_the_cli_does_not_have() -> None:
    with pytest.raises(AssertionError, match="no command 'wroker'"):
        resolve(["wroker"])
    with pytest.raises(AssertionError, match="group of commands"):
        resolve(["audit"])
    with pytest.raises(Exception, match=r"(?i)no such option"):  # click's UsageError
        resolve(["worker", "--no-such-option"])


def test_readme_covers_every_file_and_the_second_task_queue() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for path in [DOCKERFILE, COMPOSE, *k8s_files(), K8S / "kustomization.yaml"]:
        assert path.name in readme, f"deploy/README.md does not mention {path.name}"
    for phrase in (
        "make up",
        "kubectl apply -k deploy/k8s",
        "ledger-calls",
        "tests/deploy/test_deploy.py",
        SECRET,
    ):
        assert phrase in readme, phrase


def test_every_worker_gets_its_recorder_key_from_a_secret_and_a_policy_that_names_keys() -> None:
    """A worker refuses to start without a recorder key its policy lists: both files must give it one."""
    service = compose()["x-chipclear"]
    assert service["environment"]["CHIPCLEAR_RECORDER_KEY_FILE"] == "/run/secrets/recorder_key"
    assert service["secrets"] == ["recorder_key"]
    assert REQUIRED_INTERPOLATION.match(compose()["secrets"]["recorder_key"]["file"])
    assert service["environment"]["CHIPCLEAR_POLICY"] == "/run/configs/policy.toml"
    (config,) = [
        d for d in k8s_documents() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "chipclear-config"
    ]
    (deployment,) = [d for d in k8s_documents() if d["kind"] == "Deployment"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    key_file = config["data"]["CHIPCLEAR_RECORDER_KEY_FILE"]
    assert key_file.startswith(mounts["recorder-key"] + "/")
    assert volumes["recorder-key"]["secret"]["secretName"] == "chipclear-recorder-key"
    assert config["data"]["CHIPCLEAR_POLICY"].startswith(mounts["policy"] + "/")
    assert volumes["policy"]["configMap"]["name"] == "chipclear-policy"
