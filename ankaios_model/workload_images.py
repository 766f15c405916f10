"""The container images a rendered workload runs, read as the Ankaios agent reads them.

The policy's image rule must judge the image that will run, not text that looks like one.
The agent parses ``runtimeConfig`` with serde_yaml into the runtime's config struct and
builds a command line from it:

* ``podman``: ``podman [generalOptions] run --detach --name <name> [commandOptions]
  --mount=... --label=... <image> [commandArgs]``;
* ``containerd``: the same layout with nerdctl;
* ``podman-kube``: ``podman [generalOptions] kube play --quiet [playOptions] -`` with
  ``manifest`` (one or more Kubernetes documents) on stdin; every container of every pod.

So the image is not only the ``image`` field: a word in ``commandOptions`` that is not an
option (or the value of one) becomes the image and pushes the real one into the
arguments, and a word in ``generalOptions`` becomes podman's sub-command. This module
reads YAML more strictly than serde_yaml (duplicate keys, merge keys and tags other than
plain strings are refused) and parses the options with tables of the flags podman and
nerdctl know; whatever it cannot read with certainty raises :class:`CannotTell`, which
the policy turns into a refusal.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR = "tag:yaml.org,2002:str"
_MAX_NODES = 100_000


def _flags(words: str) -> frozenset[str]:
    return frozenset(words.split())


# podman run / nerdctl run options that take no value (cobra booleans: "--rm" or
# "--rm=false", never "--rm false").
_RUN_BOOLEANS = _flags(
    "--detach --disable-content-trust --env-host --help --http-proxy --init --interactive "
    "--no-healthcheck --no-hosts --oom-kill-disable --passwd --privileged --publish-all "
    "--quiet --read-only --read-only-tmpfs --replace --rm --rmi --sig-proxy --tls-verify "
    "--tty --unsetenv-all -P -d -i -q -t "
)
# ... and those that take one (as "--flag value", "--flag=value" or "-fvalue").
_RUN_VALUES = _flags(
    "--add-host --annotation --arch --attach --authfile --blkio-weight "
    "--blkio-weight-device --cap-add --cap-drop --cert-dir --cgroup-conf --cgroup-parent "
    "--cgroupns --cgroups --chrootdirs --cidfile --conmon-pidfile --cpu-period --cpu-quota "
    "--cpu-rt-period --cpu-rt-runtime --cpu-shares --cpus --cpuset-cpus --cpuset-mems "
    "--creds --decryption-key --detach-keys --device --device-cgroup-rule --device-read-bps "
    "--device-read-iops --device-write-bps --device-write-iops --dns --dns-option "
    "--dns-search --entrypoint --env --env-file --env-merge --expose --gidmap --gpus "
    "--group-add --group-entry --health-cmd --health-interval --health-log-destination "
    "--health-max-log-count --health-max-log-size --health-on-failure --health-retries "
    "--health-start-period --health-startup-cmd --health-startup-interval "
    "--health-startup-retries --health-startup-success --health-startup-timeout "
    "--health-timeout --hostname --hosts-file --hostuser --image-volume --init-path --ip "
    "--ip6 --ipc --label --label-file --log-driver --log-opt --mac-address --memory "
    "--memory-reservation --memory-swap --memory-swappiness --mount --name --namespace "
    "--net --network --network-alias --os --passwd-entry --personality --pid --pidfile "
    "--pids-limit --platform --pod --pod-id-file --preserve-fd --preserve-fds --publish "
    "--pull --rdt-class --requires --restart --retry --retry-delay --sdnotify "
    "--seccomp-policy --secret --security-opt --shm-size --shm-size-systemd --stop-signal "
    "--stop-timeout --subgidname --subuidname --sysctl --systemd --timeout --tmpfs --tz "
    "--uidmap --ulimit --umask --unsetenv --user --userns --uts --variant --volume "
    "--volumes-from --workdir -a -c -e -h -l -m -p -u -v -w "
)
# podman and nerdctl global options (before the sub-command).
_GLOBAL_BOOLEANS = _flags(
    "--debug --debug-full --experimental --help --insecure-registry --noout --syslog "
    "--transient-store "
)
_GLOBAL_VALUES = _flags(
    "--address --cdi-spec-dir --cgroup-manager --cni-netconfpath --cni-path --conmon "
    "--data-root --db-backend --events-backend --hooks-dir --host-gateway-ip --hosts-dir "
    "--imagestore --log-level --module --namespace --network-cmd-path --network-config-dir "
    "--out --root --runroot --runtime --runtime-flag --snapshotter --storage-driver "
    "--storage-opt --tmpdir --volumepath -n "
)
_PLAY_BOOLEANS = _flags(
    "--help --no-hosts --publish-all --quiet --replace --start --tls-verify --wait -q -w "
)
_PLAY_VALUES = _flags(
    "--annotation --authfile --cert-dir --configmap --creds --ip --log-driver --log-opt "
    "--mac-address --net --network --publish --seccomp-profile-root --userns "
)
_DOWN_BOOLEANS = frozenset(["--force", "--help"])

# Kubernetes kinds podman kube play reads; the others it refuses or we cannot judge.
_KUBE_KINDS = frozenset(
    ["Pod", "Deployment", "DaemonSet", "Job", "ConfigMap", "Secret", "PersistentVolumeClaim"]
)


class CannotTell(Exception):
    """What the workload would run cannot be told with certainty; ``str()`` says why."""


def images(runtime: str, runtime_config: str) -> list[str]:
    """Every image a workload of ``runtime`` with this (rendered) runtimeConfig would run."""
    if runtime in ("podman", "containerd"):
        return [_container_image(runtime_config)]
    if runtime == "podman-kube":
        return _kube_images(runtime_config)
    raise CannotTell(f"runtime {runtime!r} is not one whose images the connector can read")


def _runtime_config(
    text: str, main: str, options: dict[str, tuple[frozenset[str], frozenset[str]] | None]
) -> str:
    """The ``main`` string field of a runtimeConfig, after checking its option lists."""
    fields = _fields(_single_document(text, "runtimeConfig"), "runtimeConfig")
    if main not in fields:
        raise CannotTell(f"runtimeConfig has no {main}")
    value = _string(fields[main], f"runtimeConfig.{main}")
    for name, flags in options.items():
        if flags is None:
            if name in fields:  # arguments go to the container; only their type matters
                _strings(fields[name], f"runtimeConfig.{name}")
        else:
            _options(fields, name, *flags)
    return value


def _container_image(runtime_config: str) -> str:
    return _runtime_config(
        runtime_config,
        "image",
        {
            "generalOptions": (_GLOBAL_BOOLEANS, _GLOBAL_VALUES),
            "commandOptions": (_RUN_BOOLEANS, _RUN_VALUES),
            "commandArgs": None,
        },
    )


def _kube_images(runtime_config: str) -> list[str]:
    manifest = _runtime_config(
        runtime_config,
        "manifest",
        {
            "generalOptions": (_GLOBAL_BOOLEANS, _GLOBAL_VALUES),
            "playOptions": (_PLAY_BOOLEANS, _PLAY_VALUES),
            "downOptions": (_DOWN_BOOLEANS, frozenset()),
        },
    )
    found: list[str] = []
    documents = _documents(manifest, "the kube manifest")
    for index, document in enumerate(documents):
        where = f"kube document {index + 1}"
        kind_node = _fields(document, where).get("kind")
        kind = _string(kind_node, f"{where}.kind") if kind_node is not None else None
        if kind not in _KUBE_KINDS:
            raise CannotTell(
                f"{where} has kind {kind!r}, not one of {', '.join(sorted(_KUBE_KINDS))}"
            )
        found.extend(_images_in(document, where))
    if not found:
        raise CannotTell("the kube manifest names no image")
    return found


def _images_in(node: yaml.Node, where: str) -> Iterator[str]:
    """Every ``image`` value anywhere in a kube document (containers, init and ephemeral
    containers, pod templates); an ``image`` that is not a plain string (an image volume)
    or an annotation that names images is refused."""
    seen: set[int] = set()
    stack = [(node, where)]
    while stack:
        current, path = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, yaml.SequenceNode):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(current.value))
        elif isinstance(current, yaml.MappingNode):
            for key_node, value in current.value:
                key = key_node.value
                if key == "image":
                    yield _string(value, f"{path}.image")
                elif path.endswith(".annotations") and "image" in str(key).lower():
                    raise CannotTell(f"{path} has annotation {key!r}, which can name images")
                else:
                    stack.append((value, f"{path}.{key}"))


# -- strict YAML ----------------------------------------------------------------------


def _documents(text: str, what: str) -> list[yaml.Node]:
    loader = _Loader(text)
    nodes: list[yaml.Node] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is not None:
                _check(node, what)
                nodes.append(node)
    except yaml.YAMLError as e:
        raise CannotTell(f"{what} is not valid YAML: {' '.join(str(e).split())[:200]}") from None
    finally:
        loader.dispose()
    return nodes


def _single_document(text: str, what: str) -> yaml.Node:
    documents = _documents(text, what)
    if len(documents) != 1:
        raise CannotTell(f"{what} must be exactly one YAML document")
    return documents[0]


def _check(root: yaml.Node, what: str) -> None:
    """Refuses what serde_yaml reads differently or not at all: duplicate keys, merge keys,
    keys that are not plain strings, explicit non-standard tags."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if len(seen) > _MAX_NODES:
            raise CannotTell(f"{what} has more than {_MAX_NODES} values")
        if not node.tag.startswith("tag:yaml.org,2002:"):
            raise CannotTell(f"{what} uses the YAML tag {node.tag!r}")
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag != _STR:
                    raise CannotTell(f"{what} has a mapping key that is not a plain string")
                if key.value == "<<":
                    raise CannotTell(f"{what} uses a YAML merge key (<<)")
                if key.value in keys:
                    raise CannotTell(f"{what} has the key {key.value!r} twice")
                keys.add(key.value)
                stack.append(value)


def _fields(node: yaml.Node, what: str) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        raise CannotTell(f"{what} is not a mapping")
    return {key.value: value for key, value in node.value}


def _string(node: yaml.Node | None, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode) or node.tag != _STR:
        raise CannotTell(f"{what} is not a string")
    value: str = node.value
    return value


def _strings(node: yaml.Node, what: str) -> list[str]:
    if not isinstance(node, yaml.SequenceNode):
        raise CannotTell(f"{what} is not a list of strings")
    return [_string(item, f"{what}[{i}]") for i, item in enumerate(node.value)]


def _options(
    fields: dict[str, Any], name: str, booleans: frozenset[str], values: frozenset[str]
) -> None:
    """Refuses options with a word that the command would take as an argument."""
    if name not in fields:
        return
    words = _strings(fields[name], f"runtimeConfig.{name}")
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--rootfs" or word.startswith("--rootfs="):
            raise CannotTell(f"{name} has --rootfs: the image would be a directory")
        if word.startswith("--") and len(word) > 2:
            flag = word.split("=", 1)[0]
            if flag in booleans or (flag in values and "=" in word):
                continue
            if flag in values:
                if i >= len(words):
                    raise CannotTell(f"{name} ends with {flag}, which needs a value")
                i += 1
                continue
            raise CannotTell(f"{name} has {flag!r}, an option the connector does not know")
        if word.startswith("-") and len(word) > 1:
            for position, letter in enumerate(word[1:], start=1):
                flag = f"-{letter}"
                if flag in booleans:
                    continue
                if flag in values:
                    if position == len(word) - 1:  # the value is the next word
                        if i >= len(words):
                            raise CannotTell(f"{name} ends with {flag}, which needs a value")
                        i += 1
                    break  # the rest of the word is the value
                raise CannotTell(f"{name} has {flag!r}, an option the connector does not know")
            continue
        raise CannotTell(
            f"{name} has {word!r}, which is not an option: the command would take it as "
            "an argument (the image or a sub-command)"
        )
