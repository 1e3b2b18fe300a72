"""check-manifests.py — the project's own rules for k8s/ and k8s/loadtest/, beyond schema validation.

Run by scripts/check-manifests.sh with the Python of its tool virtualenv (PyYAML comes with
yamllint): `check-manifests.py [FOLDER...]`, by default k8s/ and k8s/loadtest/. Prints one line
per broken rule and exits 1 if any; reads files only. `check-manifests.py --render IMAGE...` checks
instead what `scripts/k8s.sh render` printed (on stdin): every image of ours (redis-api*) is one of
IMAGE (deploy overrides them all), and every workload that mounts a ConfigMap carries the
redis-api/config-checksum annotation on its pod template (a changed configuration rolls it).

Rules: one object per file, named <component>-<kind>.yaml; each folder's Kustomization lists
every manifest of that folder; the labels app/role/tier + app.kubernetes.io/{name,component,
part-of} on every object, identical in selectors, pod templates and the objects that select them;
per container a pinned image, CPU+memory requests, memory limit = request, no CPU limit, a
restricted securityContext; no service account token; no password in a ConfigMap, no Secret
outside examples/; the grace period outlasts preStop + SHUTDOWN_GRACE; a port named by a probe or
by a Service's targetPort is a named port of the container (of the selected pods); no two
workloads' pods carry the same labels; a workload a HorizontalPodAutoscaler scales sets no
spec.replicas (the autoscaler owns the size: every apply would reset the live one to it), and
each autoscaler's target is a workload checked here. Selectors may point at pods of any folder
checked in the same run.
"""

import json
import pathlib
import re
import sys

import yaml

# The repository root; the folders to check: the arguments, else k8s/ and k8s/loadtest/.
ROOT = pathlib.Path(__file__).resolve().parent.parent
FOLDERS = [pathlib.Path(a) for a in sys.argv[1:] if not sys.argv[1:2] == ["--render"]] or [ROOT / "k8s", ROOT / "k8s" / "loadtest"]
ROLES = ("master", "replica", "api", "updater", "loadgen", "aggregator", "hello")
LABELS = ("app", "tier", "app.kubernetes.io/name", "app.kubernetes.io/component", "app.kubernetes.io/part-of")
RESTRICTED = {"runAsNonRoot": True, "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
              "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
KINDS = ("ConfigMap", "Deployment", "HorizontalPodAutoscaler", "NetworkPolicy", "PodDisruptionBudget", "Secret",
         "Service", "StatefulSet")
errors = []


def fail(where, msg):
    errors.append(f"{where}: {msg}")


def seconds(text):
    m = re.fullmatch(r"(\d+)s", str(text))
    return int(m.group(1)) if m else None


def check_pod(where, pod, labels):
    spec = pod["spec"]
    if pod["metadata"].get("labels") != labels:
        fail(where, "pod template labels differ from the object's labels")
    if spec.get("automountServiceAccountToken") is not False:
        fail(where, "automountServiceAccountToken must be false")
    psc = spec.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True or psc.get("seccompProfile") != RESTRICTED["seccompProfile"]:
        fail(where, "pod securityContext needs runAsNonRoot and seccompProfile RuntimeDefault")
    for c in spec.get("initContainers", []) + spec["containers"]:
        at = f"{where} container {c['name']}"
        image = c.get("image", "")
        if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
            fail(at, f"image not pinned to a tag: {image}")
        res = c.get("resources", {})
        req, lim = res.get("requests", {}), res.get("limits", {})
        if not {"cpu", "memory"} <= req.keys():
            fail(at, "needs cpu and memory requests")
        if "cpu" in lim:
            fail(at, "no CPU limit (it throttles a latency-sensitive server)")
        if lim.get("memory") != req.get("memory"):
            fail(at, "memory limit must equal the memory request")
        sc = c.get("securityContext", {})
        for key, want in RESTRICTED.items():
            if sc.get(key) != want:
                fail(at, f"securityContext.{key} must be {json.dumps(want)}")
        if not isinstance(sc.get("runAsUser"), int) or not isinstance(sc.get("runAsGroup"), int):
            fail(at, "securityContext needs a numeric runAsUser and runAsGroup")
        names = {p["name"] for p in c.get("ports", []) if "name" in p}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            action = c.get(probe, {}).get("httpGet") or c.get(probe, {}).get("tcpSocket") or {}
            if isinstance(action.get("port"), str) and action["port"] not in names:
                fail(at, f"{probe} port {action['port']!r} is not a named port of the container")
        stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        grace = next((seconds(e["value"]) for e in c.get("env", []) if e["name"] == "SHUTDOWN_GRACE"), 0)
        if stop + grace >= spec.get("terminationGracePeriodSeconds", 30):
            fail(at, "terminationGracePeriodSeconds must exceed preStop sleep + SHUTDOWN_GRACE")


def shown(path):
    """The path as the messages show it: relative to the repository when inside it."""
    try:
        return path.resolve().relative_to(ROOT)
    except ValueError:
        return path


def check_folder(k8s, pods, selectors, ports, scaled):
    """Checks the manifests of one folder; collects pod templates, selectors and the autoscalers'
    targets (`scaled`) for main."""
    files = sorted(k8s.glob("*.yaml")) + sorted(k8s.glob("examples/*.yaml"))
    for path in files:
        where = shown(path)
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        if len(docs) != 1:
            fail(where, f"one object per file, found {len(docs)}")
            continue
        obj = docs[0]
        if obj.get("kind") not in KINDS or "metadata" not in obj:
            fail(where, f"not one of the Kubernetes kinds used here ({', '.join(KINDS)})")
            continue
        kind, meta = obj["kind"], obj["metadata"]
        suffix = f"-{kind.lower()}" + (".example.yaml" if path.parent.name == "examples" else ".yaml")
        if not path.name.endswith(suffix):
            fail(where, f"a {kind} belongs in a file named <component>{suffix}")
        labels = meta.get("labels", {})
        missing = [k for k in LABELS if k not in labels]
        if missing or labels.get("app.kubernetes.io/part-of") != "redis-api":
            fail(where, f"labels missing or wrong: {missing or 'app.kubernetes.io/part-of'}")
        if kind != "Secret" and labels.get("role") not in ROLES:
            fail(where, f"label role must be one of {', '.join(ROLES)}")
        if kind == "Secret" and path.parent.name != "examples":
            fail(where, "no Secret in k8s/: scripts/k8s.sh secret creates it")
        text = "\n".join(obj.get("data", {}).values()) if kind == "ConfigMap" else ""
        if re.search(r"^\s*(requirepass|masterauth)\b", text, re.M):
            fail(where, "a password setting in a ConfigMap (the Secret's ACL files and replica-auth.conf hold them)")
        if kind in ("Deployment", "StatefulSet"):
            if obj["spec"]["selector"].get("matchLabels") != labels:
                fail(where, "selector differs from the labels")
            check_pod(where, obj["spec"]["template"], labels)
            pods[where] = obj["spec"]["template"]
            scaled.setdefault((kind, meta["name"]), []).append((where, "replicas" in obj["spec"]))
        if kind == "HorizontalPodAutoscaler":
            ref = obj["spec"]["scaleTargetRef"]
            scaled.setdefault((ref["kind"], ref["name"]), []).append((where, None))
        sel = {"Service": lambda s: s.get("selector"), "PodDisruptionBudget": lambda s: s["selector"]["matchLabels"],
               "NetworkPolicy": lambda s: s["podSelector"]["matchLabels"]}.get(kind)
        if sel:
            selectors.append((where, sel(obj["spec"])))
        if kind == "Service":
            named = [p["targetPort"] for p in obj["spec"].get("ports", []) if isinstance(p.get("targetPort"), str)]
            ports.append((where, obj["spec"].get("selector"), named))
        if kind == "NetworkPolicy":  # peers in the same namespace are pods of ours
            for rule in obj["spec"].get("egress", []) + obj["spec"].get("ingress", []):
                for peer in rule.get("to", []) + rule.get("from", []):
                    if "podSelector" in peer and "namespaceSelector" not in peer:
                        selectors.append((where, peer["podSelector"].get("matchLabels")))
    if not (k8s / "Kustomization").is_file():
        fail(shown(k8s), "no Kustomization file")
        return len(files)
    kust = yaml.safe_load((k8s / "Kustomization").read_text())
    listed, present = sorted(kust["resources"]), sorted(p.name for p in k8s.glob("*.yaml"))
    if listed != present:
        fail(shown(k8s / "Kustomization"), f"resources {listed} != the manifests in {shown(k8s)}/ {present}")
    return len(files)


def check_render(images):
    """The --render mode: checks the objects `scripts/k8s.sh render` printed, on stdin."""
    count = 0
    for obj in (d for d in yaml.safe_load_all(sys.stdin) if d is not None):
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        count += 1
        where, pod = f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]
        for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]:
            if c["image"].startswith("redis-api") and c["image"] not in images:
                fail(where, f"image {c['image']} is not overridden by deploy")
        mounts = [v for v in pod["spec"].get("volumes", []) if "configMap" in v]
        if mounts and "redis-api/config-checksum" not in pod["metadata"].get("annotations", {}):
            fail(where, "mounts a ConfigMap but has no redis-api/config-checksum annotation")
    for e in errors:
        print(f"error: {e}")
    print(f"{count} workloads in the render: {len(errors)} rule(s) broken")
    return 1 if errors or not count else 0


def main():
    if sys.argv[1:2] == ["--render"]:
        return check_render(sys.argv[2:])
    pods, selectors, ports, scaled, count = {}, [], [], {}, 0
    for k8s in FOLDERS:
        count += check_folder(k8s, pods, selectors, ports, scaled)
    for (kind, name), seen in scaled.items():
        hpas = [w for w, replicas in seen if replicas is None]
        workloads = [(w, replicas) for w, replicas in seen if replicas is not None]
        if hpas and not workloads:
            fail(hpas[0], f"scaleTargetRef {kind}/{name} is no workload checked here")
        for where, replicas in workloads:
            if hpas and replicas:
                fail(where, f"spec.replicas set, but {hpas[0]} owns the size: applying this resets it")
    templates = [p["metadata"]["labels"] for p in pods.values()]
    for where, labels in ((w, p["metadata"]["labels"]) for w, p in pods.items()):
        if templates.count(labels) > 1:
            fail(where, "another workload's pods carry the same labels (selectors would take both)")
    for where, sel in selectors:
        if sel not in templates:
            fail(where, f"selector matches no pod template's labels exactly: {sel}")
    for where, sel, named in ports:
        for pod in (p for p in pods.values() if p["metadata"]["labels"] == sel):
            containers = pod["spec"].get("initContainers", []) + pod["spec"]["containers"]
            names = {p["name"] for c in containers for p in c.get("ports", []) if "name" in p}
            for port in named:
                if port not in names:
                    fail(where, f"targetPort {port!r} is not a named port of the selected pods")
    for e in errors:
        print(f"error: {e}")
    print(f"{count} manifests in {', '.join(str(shown(k)) for k in FOLDERS)}: {len(errors)} rule(s) broken")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
