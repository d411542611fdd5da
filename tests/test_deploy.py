"""deploy/: the container image and the Kubernetes manifests are valid for our CLI and for the
Dask Kubernetes operator.

Nothing is built or applied here (no Docker engine, no cluster): every manifest under
``deploy/kubernetes`` is parsed and checked against the resource kinds and fields it may use, every
``mask-pipeline`` command line is parsed by the CLI's own parser, every ``dask scheduler`` /
``dask worker`` command line uses only flags the installed ``dask`` offers, the mounted job file
loads with the environment the manifests give it, and credentials stay placeholders.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import subprocess
import sys
import zoneinfo
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from pipeline.cli import build_parser
from pipeline.jobs import load_job
from pipeline.runner import EXIT_INPUT_ERRORS, EXIT_USAGE

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
MANIFESTS = DEPLOY / "kubernetes"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = DEPLOY / "Dockerfile.dockerignore"
MANIFEST_FILES = sorted([*MANIFESTS.glob("*.yaml"), *MANIFESTS.glob("*.yml")])
NAMESPACE = "mask-pipeline"

#: (apiVersion, kind) of every resource the manifests may hold.
ALLOWED_KINDS = {
    ("v1", "Namespace"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("batch/v1", "CronJob"),
    ("kubernetes.dask.org/v1", "DaskCluster"),
    ("kubernetes.dask.org/v1", "DaskJob"),
}
#: Fields of the operator's custom resources (its CRDs prune anything else silently).
DASK_CLUSTER_SPEC_FIELDS = {"worker", "scheduler", "idleTimeout"}
DASK_WORKER_FIELDS = {"replicas", "spec", "metadata"}
DASK_SCHEDULER_FIELDS = {"spec", "service", "metadata"}
DASK_JOB_SPEC_FIELDS = {"job", "cluster"}
DASK_JOB_PART_FIELDS = {"spec", "metadata"}
#: Environment variables the operator injects into the pods it creates, per role.
OPERATOR_ENV = {
    "worker": {"DASK_WORKER_NAME", "DASK_SCHEDULER_ADDRESS"},
    "scheduler": set(),
    "runner": set(),
}
#: The storage credentials every pod that touches storage (runners, workers) must receive.
CREDENTIAL_KEYS = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
PLACEHOLDER = "REPLACE_ME"
CREDENTIAL_NAME = re.compile(r"SECRET|PASSW|TOKEN|ACCESS_KEY|CREDENTIAL|PRIVATE|^AWS_", re.I)
AWS_KEY_ID = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")


# --- loading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    """A pod spec found in a manifest: in which resource, and what it is for."""

    file: str
    resource: str  # "<Kind>/<name>"
    role: str  # worker | scheduler | runner
    spec: Mapping[str, Any]
    cluster: str | None  # the Dask cluster the pod belongs to or connects to via the operator


@cache
def documents() -> tuple[tuple[str, dict[str, Any]], ...]:
    """(file name, document) for every non-empty YAML document under deploy/kubernetes."""
    found = []
    for path in MANIFEST_FILES:
        with path.open(encoding="utf-8") as stream:
            for document in yaml.safe_load_all(stream):
                if document is not None:
                    found.append((path.name, document))
    return tuple(found)


def resources(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in documents() if doc.get("kind") == kind]


def by_name(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in resources(kind)}


def pods() -> list[Pod]:
    """Every pod spec of every manifest, with its role."""
    found = []
    for file, doc in documents():
        kind, name, spec = doc["kind"], doc["metadata"]["name"], doc.get("spec", {})
        where = f"{kind}/{name}"
        if kind == "DaskCluster":
            found.append(Pod(file, where, "worker", spec["worker"]["spec"], name))
            found.append(Pod(file, where, "scheduler", spec["scheduler"]["spec"], name))
        elif kind == "DaskJob":
            # The operator names the job's cluster after the DaskJob.
            cluster = spec["cluster"]["spec"]
            found.append(Pod(file, where, "runner", spec["job"]["spec"], name))
            found.append(Pod(file, where, "worker", cluster["worker"]["spec"], name))
            found.append(Pod(file, where, "scheduler", cluster["scheduler"]["spec"], name))
        elif kind == "CronJob":
            template = spec["jobTemplate"]["spec"]["template"]["spec"]
            found.append(Pod(file, where, "runner", template, None))
    return found


def containers() -> Iterator[tuple[Pod, dict[str, Any]]]:
    for pod in pods():
        for container in [*pod.spec.get("initContainers", []), *pod.spec["containers"]]:
            yield pod, container


def argv(container: Mapping[str, Any]) -> list[str]:
    """The command line a container runs (the image has no ENTRYPOINT: args alone are argv)."""
    return [str(a) for a in [*container.get("command", []), *container.get("args", [])]]


def env_names(container: Mapping[str, Any]) -> set[str]:
    """Names of the variables a container receives from its manifest (env and envFrom)."""
    names = {item["name"] for item in container.get("env", [])}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            data = by_name("ConfigMap")[source["configMapRef"]["name"]].get("data", {})
            names |= {source.get("prefix", "") + key for key in data}
        if "secretRef" in source:
            names |= {source.get("prefix", "") + key for key in secret_keys(source["secretRef"])}
    return names


def env_values(container: Mapping[str, Any]) -> dict[str, str]:
    """The plain (non-secret) variables of a container: ConfigMap data under its own values."""
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            data = by_name("ConfigMap")[source["configMapRef"]["name"]].get("data", {})
            values |= {source.get("prefix", "") + k: str(v) for k, v in data.items()}
    for item in container.get("env", []):
        if "value" in item:
            values[item["name"]] = str(item["value"])
        elif "configMapKeyRef" in item.get("valueFrom", {}):
            ref = item["valueFrom"]["configMapKeyRef"]
            values[item["name"]] = str(by_name("ConfigMap")[ref["name"]]["data"][ref["key"]])
    return values


def secret_keys(ref: Mapping[str, Any]) -> set[str]:
    secret = by_name("Secret")[ref["name"]]
    return set(secret.get("stringData", {})) | set(secret.get("data", {}))


def secret_refs(container: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(Secret name, key) pairs a container reads through secretKeyRef."""
    refs = set()
    for item in container.get("env", []):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None:
            refs.add((ref["name"], ref["key"]))
    return refs


# --- the manifests as Kubernetes resources ---------------------------------------------------


def test_manifests_exist() -> None:
    names = {path.name for path in MANIFEST_FILES}
    assert names >= {
        "daskcluster.yaml",
        "daskjob.yaml",
        "cronjob.yaml",
        "configmap-job.yaml",
        "secret-example.yaml",
    }


@pytest.mark.parametrize("path", MANIFEST_FILES, ids=lambda p: p.name)
def test_every_document_is_an_allowed_resource(path: Path) -> None:
    with path.open(encoding="utf-8") as stream:
        docs = [doc for doc in yaml.safe_load_all(stream) if doc is not None]
    assert docs, f"{path.name}: no YAML document"
    for doc in docs:
        assert isinstance(doc, dict), f"{path.name}: a document is not a mapping"
        key = (doc.get("apiVersion"), doc.get("kind"))
        assert key in ALLOWED_KINDS, f"{path.name}: {key} is not an allowed resource kind"
        metadata = doc.get("metadata", {})
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", metadata.get("name", "")), (
            f"{path.name}: {doc['kind']} needs a DNS-1123 metadata.name"
        )
        if doc["kind"] == "Namespace":
            assert metadata["name"] == NAMESPACE
        else:
            assert metadata.get("namespace") == NAMESPACE, (
                f"{path.name}: {doc['kind']}/{metadata['name']} must be in {NAMESPACE}"
            )


def test_resource_names_are_unique() -> None:
    seen = [(doc["kind"], doc["metadata"]["name"]) for _, doc in documents()]
    assert len(seen) == len(set(seen)), seen


def _check_dask_cluster_spec(spec: Mapping[str, Any], cluster: str, where: str) -> None:
    """The operator's DaskCluster spec (also DaskJob.spec.cluster.spec), for cluster ``cluster``."""
    assert set(spec) <= DASK_CLUSTER_SPEC_FIELDS, f"{where}: unknown fields {set(spec)}"
    assert {"worker", "scheduler"} <= set(spec), f"{where}: worker and scheduler are required"
    if "idleTimeout" in spec:
        assert isinstance(spec["idleTimeout"], int)

    worker = spec["worker"]
    assert set(worker) <= DASK_WORKER_FIELDS, f"{where}: unknown worker fields {set(worker)}"
    replicas = worker.get("replicas")
    assert isinstance(replicas, int) and not isinstance(replicas, bool) and replicas >= 0, (
        f"{where}: spec.worker.replicas must be an integer"
    )
    assert worker["spec"]["containers"], f"{where}: worker pod without containers"

    scheduler = spec["scheduler"]
    assert set(scheduler) <= DASK_SCHEDULER_FIELDS, f"{where}: unknown scheduler fields"
    assert {"spec", "service"} <= set(scheduler), f"{where}: scheduler.spec and .service needed"
    (container,) = scheduler["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    # The operator reaches the scheduler through these port names (scaling, idle checks).
    assert ports == {"tcp-comm": 8786, "http-dashboard": 8787}, f"{where}: scheduler ports"
    for probe in ("readinessProbe", "livenessProbe"):
        http = container[probe]["httpGet"]
        assert http["port"] in ports and http["path"] == "/health", f"{where}: {probe}"

    service = scheduler["service"]
    assert service.get("type", "ClusterIP") == "ClusterIP"
    # The operator labels the scheduler pod with exactly these.
    assert service["selector"] == {
        "dask.org/cluster-name": cluster,
        "dask.org/component": "scheduler",
    }, f"{where}: the service selector must match the operator's scheduler pod labels"
    service_ports = {p["name"]: p for p in service["ports"]}
    assert set(service_ports) == {"tcp-comm", "http-dashboard"}, f"{where}: service ports"
    for name, port in service_ports.items():
        assert port["port"] == ports[name], f"{where}: service port {name}"
        assert port["targetPort"] in (name, ports[name]), f"{where}: targetPort of {name}"


@pytest.mark.parametrize("cluster", resources("DaskCluster"), ids=lambda d: d["metadata"]["name"])
def test_dask_cluster_structure(cluster: dict[str, Any]) -> None:
    name = cluster["metadata"]["name"]
    _check_dask_cluster_spec(cluster["spec"], name, f"DaskCluster/{name}")


@pytest.mark.parametrize("job", resources("DaskJob"), ids=lambda d: d["metadata"]["name"])
def test_dask_job_structure(job: dict[str, Any]) -> None:
    name, spec = job["metadata"]["name"], job["spec"]
    where = f"DaskJob/{name}"
    assert set(spec) == DASK_JOB_SPEC_FIELDS, f"{where}: spec needs exactly job and cluster"
    assert set(spec["job"]) <= DASK_JOB_PART_FIELDS and set(spec["cluster"]) <= DASK_JOB_PART_FIELDS
    pod = spec["job"]["spec"]
    assert pod["containers"], f"{where}: job pod without containers"
    # A bare Pod restarts Always by default: the run would never end.
    assert pod.get("restartPolicy") in ("Never", "OnFailure"), f"{where}: restartPolicy"
    for container in pod["containers"]:
        # The operator injects it (pointing at this job's cluster); a second one is ambiguous.
        assert "DASK_SCHEDULER_ADDRESS" not in {e["name"] for e in container.get("env", [])}
    _check_dask_cluster_spec(spec["cluster"]["spec"], name, f"{where} cluster")


def _check_cron_field(text: str, low: int, high: int, names: list[str]) -> None:
    for part in text.split(","):
        base, _, step = part.partition("/")
        if step:
            assert step.isdigit() and int(step) > 0, f"bad step in {part!r}"
        if base == "*":
            continue
        bounds = base.split("-")
        assert len(bounds) in (1, 2), f"bad range {base!r}"
        values = []
        for bound in bounds:
            if bound.upper() in names:
                values.append(names.index(bound.upper()) + low)
            else:
                assert bound.isdigit(), f"bad value {bound!r}"
                values.append(int(bound))
        assert all(low <= v <= high for v in values), f"{base!r} outside {low}..{high}"
        assert values == sorted(values), f"decreasing range {base!r}"


def check_cron(schedule: str) -> None:
    """A standard 5-field cron expression (as the CronJob controller accepts)."""
    if schedule in (
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
    ):
        return
    fields = schedule.split()
    assert len(fields) == 5, f"{schedule!r}: cron needs 5 fields"
    months = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    days = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
    for text, (low, high, names) in zip(
        fields,
        [(0, 59, []), (0, 23, []), (1, 31, []), (1, 12, months), (0, 7, days)],
        strict=True,
    ):
        _check_cron_field(text.replace("?", "*"), low, high, names)


def test_cron_checker() -> None:
    for good in ("30 2 * * *", "*/15 * * * MON-FRI", "0 0 1,15 JAN *", "@daily"):
        check_cron(good)
    for bad in ("30 2 * *", "61 2 * * *", "0 24 * * *", "0 0 0 * *", "x * * * *", "0 5-1 * * *"):
        with pytest.raises(AssertionError):
            check_cron(bad)


@pytest.mark.parametrize("cronjob", resources("CronJob"), ids=lambda d: d["metadata"]["name"])
def test_cronjob_structure(cronjob: dict[str, Any]) -> None:
    spec = cronjob["spec"]
    check_cron(spec["schedule"])
    if "timeZone" in spec and zoneinfo.available_timezones():
        zoneinfo.ZoneInfo(spec["timeZone"])
    assert spec["concurrencyPolicy"] == "Forbid", "a night's run must not overlap the last one"
    job = spec["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    assert pod["containers"]
    assert pod["restartPolicy"] in ("OnFailure", "Never")
    if "podFailurePolicy" in job:
        assert pod["restartPolicy"] == "Never", "podFailurePolicy needs restartPolicy Never"
        names = {c["name"] for c in pod["containers"]}
        codes: set[int] = set()
        for rule in job["podFailurePolicy"]["rules"]:
            exit_codes = rule.get("onExitCodes")
            if exit_codes is None:
                continue
            assert exit_codes.get("containerName", next(iter(names))) in names
            if rule["action"] == "FailJob" and exit_codes["operator"] == "In":
                codes |= set(exit_codes["values"])
        # Usage errors and finished runs with inputs in errors/ are not retried; exit code 1
        # (could not proceed, e.g. storage unreachable) is.
        assert codes == {EXIT_USAGE, EXIT_INPUT_ERRORS}


def test_cronjob_reaches_the_long_lived_cluster() -> None:
    clusters = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d for d in resources("DaskCluster")
    }
    runners = [(pod, c) for pod, c in containers() if pod.resource.startswith("CronJob/")]
    assert runners
    for pod, container in runners:
        address = env_values(container).get("DASK_SCHEDULER_ADDRESS")
        assert address, f"{pod.resource}: DASK_SCHEDULER_ADDRESS is not set"
        match = re.fullmatch(
            r"tcp://([a-z0-9-]+)-scheduler\.([a-z0-9-]+)\.svc\.cluster\.local:(\d+)", address
        )
        assert match, f"{pod.resource}: {address!r} is not a scheduler Service address"
        name, namespace, port = match.group(1), match.group(2), int(match.group(3))
        assert (namespace, name) in clusters, f"{pod.resource}: no DaskCluster {namespace}/{name}"
        ports = clusters[(namespace, name)]["spec"]["scheduler"]["service"]["ports"]
        assert {"name": "tcp-comm", "port": port} in [
            {"name": p["name"], "port": p["port"]} for p in ports
        ]


# --- pods: images, resources, security -------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, rest = text.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def image_uid() -> int:
    users = [rest for keyword, rest in dockerfile_instructions() if keyword == "USER"]
    return int(users[-1].split(":")[0])


def test_every_pod_and_container_is_hardened() -> None:
    images = set()
    uid = image_uid()
    for pod in pods():
        where = f"{pod.file}: {pod.resource} ({pod.role})"
        context = pod.spec.get("securityContext", {})
        assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert pod.spec.get("automountServiceAccountToken") is False, where
        assert not pod.spec.get("hostNetwork") and not pod.spec.get("hostPID"), where
        volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
        for volume in volumes.values():
            assert set(volume) - {"name"} <= {"configMap", "emptyDir", "secret", "projected"}, (
                f"{where}: volume {volume['name']} is not allowed by the restricted profile"
            )
        for container in [*pod.spec.get("initContainers", []), *pod.spec["containers"]]:
            at = f"{where} container {container['name']}"
            image = container.get("image", "")
            assert re.fullmatch(r"[\w.\-/:]+:[\w.\-]+", image), f"{at}: image needs a tag"
            assert not image.endswith(":latest"), f"{at}: pin the image tag"
            images.add(image)

            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{at}: {kind}"

            security = container.get("securityContext", {})
            effective = {**context, **security}
            assert effective.get("runAsNonRoot") is True, f"{at}: runAsNonRoot"
            assert effective.get("runAsUser", uid) == uid != 0, f"{at}: runAsUser"
            assert security.get("allowPrivilegeEscalation") is False, f"{at}"
            assert not security.get("privileged"), at
            assert security.get("capabilities", {}).get("drop") == ["ALL"], f"{at}: capabilities"
            assert not security.get("capabilities", {}).get("add"), f"{at}: capabilities"
            assert all("hostPort" not in p for p in container.get("ports", [])), at

            mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
            for mount in mounts.values():
                assert mount["name"] in volumes, f"{at}: unknown volume {mount['name']}"
            assert security.get("readOnlyRootFilesystem") is True, f"{at}: read-only root"
            # Dask's spill/scratch space and numba's cache (NUMBA_CACHE_DIR) live in /tmp.
            assert "/tmp" in mounts, f"{at}: a read-only root needs a writable /tmp"
            assert "emptyDir" in volumes[mounts["/tmp"]["name"]], f"{at}: /tmp is not an emptyDir"
    # Client, scheduler and workers must run the same versions of everything.
    assert len(images) == 1, f"one image everywhere, got {sorted(images)}"


def test_the_namespace_enforces_the_restricted_profile() -> None:
    (namespace,) = resources("Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_roles_are_complete() -> None:
    roles = {(pod.resource.split("/")[0], pod.role) for pod in pods()}
    assert roles >= {
        ("DaskCluster", "worker"),
        ("DaskCluster", "scheduler"),
        ("DaskJob", "runner"),
        ("DaskJob", "worker"),
        ("DaskJob", "scheduler"),
        ("CronJob", "runner"),
    }


# --- command lines ---------------------------------------------------------------------------


def _mounted_file(pod: Pod, container: Mapping[str, Any], path: str) -> str | None:
    """The content a ConfigMap mounted in ``container`` gives ``path`` (None: not mounted)."""
    volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        root = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(root) or "configMap" not in volumes[mount["name"]]:
            continue
        source = volumes[mount["name"]]["configMap"]
        data = by_name("ConfigMap")[source["name"]]["data"]
        relative = path[len(root) :]
        if "subPath" in mount:
            return None
        items = {item["path"]: item["key"] for item in source.get("items", [])}
        key = items.get(relative) if items else relative
        return data.get(key) if key is not None else None
    return None


def pipeline_commands() -> list[tuple[Pod, dict[str, Any], list[str]]]:
    return [(p, c, argv(c)) for p, c in containers() if argv(c)[:1] == ["mask-pipeline"]]


def test_runners_run_the_pipeline() -> None:
    for pod, container in containers():
        if pod.role == "runner":
            assert argv(container)[:1] == ["mask-pipeline"], f"{pod.resource}: {argv(container)}"
    assert {pod.resource.split("/")[0] for pod, _, _ in pipeline_commands()} >= {
        "DaskJob",
        "CronJob",
    }


def test_pipeline_command_lines_parse() -> None:
    commands = pipeline_commands()
    assert commands
    for pod, container, args in commands:
        where = f"{pod.resource} container {container['name']}: {shlex.join(args)}"
        assert not any("$(" in a for a in args), f"{where}: no Kubernetes $(VAR) expansion here"
        try:
            parsed = build_parser().parse_args(args[1:])
        except SystemExit as exc:  # argparse reports the problem on stderr
            pytest.fail(f"{where}: not valid for mask-pipeline (exit {exc.code})")
        if parsed.command == "run":
            content = _mounted_file(pod, container, parsed.job)
            assert content is not None, f"{where}: {parsed.job} is not mounted from a ConfigMap"
            for override in parsed.overrides:
                assert "=" in override, f"{where}: --set {override}"


@cache
def dask_help(command: str) -> str:
    """``dask <command> --help`` of the installed dask (the image installs the same pins)."""
    dask = Path(sys.executable).with_name("dask")
    executable = str(dask) if dask.exists() else shutil.which("dask")
    assert executable, "the dask command line is not installed"
    result = subprocess.run(
        [executable, command, "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout


def dask_commands() -> list[tuple[Pod, dict[str, Any], str, list[str]]]:
    found = []
    for pod, container in containers():
        args = argv(container)
        if args[:1] == ["dask"] and len(args) > 1:
            found.append((pod, container, args[1], args[2:]))
        elif args[:1] and args[0] in ("dask-worker", "dask-scheduler"):
            found.append((pod, container, args[0].removeprefix("dask-"), args[1:]))
    return found


def test_dask_command_lines_use_existing_flags() -> None:
    commands = dask_commands()
    assert {(p.role, sub) for p, _, sub, _ in commands} == {
        ("worker", "worker"),
        ("scheduler", "scheduler"),
    }
    for pod, container, sub, args in commands:
        where = f"{pod.resource} ({pod.role}): dask {sub} {shlex.join(args)}"
        assert sub == pod.role, f"{where}: a {pod.role} pod must run `dask {pod.role}`"
        text = dask_help(sub)
        for flag in (a.split("=", 1)[0] for a in args if a.startswith("-")):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), (
                f"{where}: {flag} is not an option of `dask {sub}`"
            )
        # And the whole line parses (values, types) with the command dask would run.
        (entry,) = entry_points(group="dask_cli", name=sub)
        command: click.Command = entry.load()
        try:
            context = command.make_context(f"dask {sub}", list(args))
        except click.ClickException as exc:
            pytest.fail(f"{where}: {exc.format_message()}")
        params = context.params
        assert not params["preload_argv"], f"{where}: stray arguments {params['preload_argv']}"

        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        if sub == "worker":
            # The operator's worker contract: named after the pod, scheduler from the env.
            assert params["name"] == "$(DASK_WORKER_NAME)", f"{where}: --name $(DASK_WORKER_NAME)"
            assert params["scheduler"] is None and params["scheduler_file"] is None, where
            assert params["dashboard"] is True, f"{where}: --dashboard"
            assert str(params["dashboard_address"]).rsplit(":", 1)[-1] == str(
                ports["http-dashboard"]
            ), f"{where}: dashboard port"
        else:
            assert str(params["port"]) == str(ports["tcp-comm"]), f"{where}: --port"
            assert str(params["dashboard_address"]).rsplit(":", 1)[-1] == str(
                ports["http-dashboard"]
            ), f"{where}: dashboard port"


def test_kubernetes_variable_references_are_defined() -> None:
    for pod, container in containers():
        defined = env_names(container) | OPERATOR_ENV[pod.role]
        for arg in argv(container):
            for name in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", arg):
                assert name in defined, f"{pod.resource} ({pod.role}): $({name}) is not defined"


# --- configuration: the job file and the environment -----------------------------------------


def runner_job_file(pod: Pod, container: Mapping[str, Any]) -> str:
    args = build_parser().parse_args(argv(container)[1:])
    content = _mounted_file(pod, container, args.job)
    assert content is not None
    return content


def test_every_runner_job_file_loads_with_the_runner_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runners = [(p, c) for p, c in containers() if p.role == "runner"]
    assert runners
    for index, (pod, container) in enumerate(runners):
        text = runner_job_file(pod, container)
        with monkeypatch.context() as patch:
            for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text):
                patch.delenv(name, raising=False)
            for name, value in env_values(container).items():
                patch.setenv(name, value)
            job = tmp_path / f"job-{index}.toml"
            job.write_text(text, encoding="utf-8")
            options = load_job(job)
            assert "${" not in options.output
            # No scheduler in the file: DASK_SCHEDULER_ADDRESS (the operator's or the
            # CronJob's) decides where the run goes.
            assert options.execution.scheduler is None, f"{pod.resource}: job sets a scheduler"
            assert options.execution.progress is False, "no progress bar in pod logs"


def test_the_job_configmap_is_the_shipped_nightly_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (configmap,) = [c for c in resources("ConfigMap") if "job.toml" in c.get("data", {})]
    job = tmp_path / "job.toml"
    job.write_text(configmap["data"]["job.toml"], encoding="utf-8")
    monkeypatch.setenv("RAW_PREFIX", "s3://raw/celantur/")
    monkeypatch.setenv("STATS_PREFIX", "s3://stats/celantur/")
    options = load_job(job)
    assert options == load_job(ROOT / "jobs" / "nightly-celantur.toml")
    assert options.source == "s3://raw/celantur/"  # type: ignore[attr-defined]
    assert options.incremental is True


def test_storage_options_from_the_environment_are_a_json_object() -> None:
    for pod, container in containers():
        text = env_values(container).get("MASK_PIPELINE_STORAGE_OPTIONS")
        if text is None:
            continue
        value = json.loads(text)
        assert isinstance(value, dict), f"{pod.resource}: MASK_PIPELINE_STORAGE_OPTIONS"
        flat = json.dumps(value).lower()
        assert not re.search(r"secret|password|token|\"key\"", flat), (
            f"{pod.resource}: credentials belong in the Secret, not in storage options"
        )


def test_configmaps_hold_no_credentials() -> None:
    for configmap in resources("ConfigMap"):
        for key in configmap.get("data", {}):
            assert not CREDENTIAL_NAME.search(key) or key in {
                "AWS_DEFAULT_REGION",
                "AWS_REGION",
                "AWS_ENDPOINT_URL",
                "AWS_PROFILE",
            }, f"ConfigMap/{configmap['metadata']['name']}: {key} belongs in a Secret"


# --- credentials -----------------------------------------------------------------------------


def test_secret_templates_hold_only_placeholders() -> None:
    secrets = resources("Secret")
    assert secrets
    for secret in secrets:
        name = secret["metadata"]["name"]
        values = dict(secret.get("stringData", {}))
        for key, encoded in secret.get("data", {}).items():
            values[key] = base64.b64decode(encoded).decode("utf-8", "replace")
        assert values, f"Secret/{name} is empty"
        for key, value in values.items():
            assert PLACEHOLDER in str(value), f"Secret/{name}: {key} is not a placeholder"
    for path in [*MANIFEST_FILES, DOCKERFILE]:
        assert not AWS_KEY_ID.search(path.read_text(encoding="utf-8")), f"{path.name}: AWS key"


def test_secret_and_configmap_references_exist() -> None:
    secrets, configmaps = by_name("Secret"), by_name("ConfigMap")
    for pod, container in containers():
        at = f"{pod.resource} ({pod.role}) container {container['name']}"
        for item in container.get("env", []):
            source = item.get("valueFrom", {})
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                assert ref["name"] in secrets, f"{at}: no Secret {ref['name']}"
                if not ref.get("optional"):
                    assert ref["key"] in secret_keys(ref), f"{at}: no key {ref['key']}"
            if "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                assert ref["key"] in configmaps[ref["name"]].get("data", {}), at
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                assert source["secretRef"]["name"] in secrets, at
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in configmaps, at
        for volume in pod.spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in configmaps, at
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, at


def test_credentials_reach_runners_and_workers_only() -> None:
    for pod, container in containers():
        keys = {key for _, key in secret_refs(container)}
        at = f"{pod.resource} ({pod.role})"
        if pod.role == "scheduler":
            # The scheduler never touches storage.
            assert not keys and not any("secretRef" in s for s in container.get("envFrom", []))
        else:
            # Workers read and write storage themselves: same credentials as the runner.
            assert keys == CREDENTIAL_KEYS, f"{at}: gets {sorted(keys)}"


# --- the image -------------------------------------------------------------------------------


def test_dockerfile_base_and_entrypoint() -> None:
    instructions = dockerfile_instructions()
    (base,) = [rest for keyword, rest in instructions if keyword == "FROM"]
    assert base.split()[0] == "python:3.11-slim"
    # dask scheduler/worker and mask-pipeline all run from this image: the manifests choose.
    assert "ENTRYPOINT" not in {keyword for keyword, _ in instructions}


def test_dockerfile_installs_the_package_from_the_repository_root() -> None:
    instructions = dockerfile_instructions()
    workdir = "/"
    copied: dict[str, str] = {}  # destination in the image -> source in the context
    install_at = None
    for index, (keyword, rest) in enumerate(instructions):
        if keyword == "WORKDIR":
            workdir = rest if rest.startswith("/") else f"{workdir.rstrip('/')}/{rest}"
        elif keyword == "COPY":
            if "--from=" in rest:
                continue  # from another build stage, not from the context
            *sources, destination = [p for p in rest.split() if not p.startswith("--")]
            for source in sources:
                # The build context is the repository root (docker build -f deploy/Dockerfile .).
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository root"
                target = destination if destination.startswith("/") else f"{workdir}/{destination}"
                if target.endswith("/") or len(sources) > 1:
                    target = f"{target.rstrip('/')}/{Path(source).name}"
                copied[str(Path(target))] = source
        elif keyword == "RUN" and re.search(r"pip install --no-cache-dir \.(\s|$)", rest):
            install_at = (index, workdir)
    assert install_at is not None, "the image must `pip install --no-cache-dir .`"
    _, where = install_at
    assert copied.get(str(Path(where) / "pyproject.toml")) == "pyproject.toml"
    assert copied.get(str(Path(where) / "pipeline")) == "pipeline"
    assert copied.get(str(Path(where) / "README.md")) == "README.md"  # pyproject's readme


def test_dockerfile_runs_as_a_fixed_non_root_user_after_installing() -> None:
    instructions = dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    user_index = max(i for i, k in enumerate(keywords) if k == "USER")
    runs = [i for i, k in enumerate(keywords) if k == "RUN"]
    assert runs and max(runs) < user_index, "USER must come after every RUN (installation)"
    user = instructions[user_index][1].split(":")[0]
    assert user.isdigit() and int(user) != 0, "a fixed numeric non-root UID"
    assert any(user in rest for k, rest in instructions if k == "RUN"), "the UID is created"


def test_dockerfile_bakes_in_no_credentials() -> None:
    for keyword, rest in dockerfile_instructions():
        if keyword not in ("ENV", "ARG"):
            continue
        names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)(?:=|\s|$)", rest)
        if keyword == "ENV" and "=" not in rest:
            names = names[:1]  # legacy `ENV NAME value`
        for name in names:
            assert not CREDENTIAL_NAME.search(name), f"{keyword} {name}: no credentials in images"
    for keyword, rest in dockerfile_instructions():
        if keyword in ("COPY", "ADD"):
            assert not re.search(r"\.aws|\.env\b|credential|secret|\.pem\b|\.key\b", rest, re.I), (
                f"{keyword} {rest}: no credentials in images"
            )


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore semantics, enough for our patterns (last match wins)."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.lstrip("!").strip("/")
        regex = re.escape(body).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        if re.fullmatch(regex, path) or re.fullmatch(regex + "/.*", path):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_build_inputs_and_drops_the_rest() -> None:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    for needed in ("pyproject.toml", "README.md", "pipeline", "pipeline/cli.py"):
        assert not _ignored(needed, patterns), f"{needed} must be in the build context"
    for dropped in (
        ".venv/bin/python",
        ".git/config",
        "tests/conftest.py",
        "pipeline/__pycache__/x.pyc",
    ):
        assert _ignored(dropped, patterns), f"{dropped} must stay out of the build context"


def test_manifests_run_as_the_image_user() -> None:
    uid = image_uid()
    for pod in pods():
        assert pod.spec["securityContext"]["runAsUser"] == uid, pod.resource


# --- documentation ---------------------------------------------------------------------------


def test_readme_documents_every_file_and_variable() -> None:
    text = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for path in MANIFEST_FILES:
        assert path.name in text, f"deploy/README.md does not describe {path.name}"
    for name in (
        "RAW_PREFIX",
        "STATS_PREFIX",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT_URL",
        "MASK_PIPELINE_STORAGE_OPTIONS",
        "DASK_SCHEDULER_ADDRESS",
        "-f deploy/Dockerfile",
    ):
        assert name in text, f"deploy/README.md does not mention {name}"
