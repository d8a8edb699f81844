"""The CronJob's exact ssh command line, taken from the rendered manifest, against a real OpenSSH sshd on loopback
that plays the VM: host key pinned through known_hosts, the trigger key in authorized_keys as the Ansible role writes it
from Terraform's ansible_vars (restrict, from=, forced command), and the real agent's `trigger` as the forced command.

Only the host, the port and the /secrets directory of the command line are substituted. The client runs the way the
kicker pod runs it, all taken from the manifest: as its runAsUser/runAsGroup with the fsGroup as supplementary group,
the key root-owned with the mode kubelet derives from defaultMode and fsGroup (0400 → 0440, group fsGroup), and a
home directory it cannot write.

Users exist only inside private mount namespaces (a copy of /etc/passwd and /etc/group is bind-mounted over the
real ones), so the machine's own accounts are never touched.

The command runs through k8s/kicker/try-members as the image installs it (root-owned, 0755), with the member list
MBA_TARGET_HOSTS the ConfigMap would give: loopback addresses, where 127.0.0.1 is the VM and any other one refuses
connections on the sshd's port (or is a canary listener that records whether anyone tried it).

The forced command is `<repo>/target/debug/mongo-backup-agent --config <test config> trigger` (built with `cargo build`
first). Tests that need a daemon start the real `serve` (inside the same namespace, so the control socket's group is
the trigger user's) against the MongoDB server of tests/harness/with-services.sh, which `make test-infra` runs this
suite under: the kick then runs a real backup into a directory store and ssh carries the backup's exit status back."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

import infra_lib as lib

@dataclass
class Vm:
    """The loopback stand-in for the MongoDB VM and the kicker pod's view of it."""

    base: Path
    port: int
    passwd: Path
    group: Path
    trigger_user: str
    trigger_uid: int
    trigger_home: Path
    forced_command: str
    kicker_uid: int
    kicker_gid: int
    kicker_groups: str
    kicker_home: Path
    secrets: Path
    secret_mode: int
    secret_group: int
    sshd_log: Path
    agent: Path
    agent_config: Path
    socket: Path
    store: Path
    try_members: Path

    def namespaced(self, argv: list[str]) -> list[str]:
        """argv in a private mount namespace where the test users exist."""
        script = 'mount --bind "$1" /etc/passwd && mount --bind "$2" /etc/group && shift 2 && exec "$@"'
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh",
                str(self.passwd), str(self.group), *argv]

    def as_kicker(self, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run argv the way the kicker container runs its command."""
        return subprocess.run(self.kicker_argv(argv), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, cwd="/")

    def kicker_argv(self, argv: list[str]) -> list[str]:
        """argv wrapped to run as the kicker container's user."""
        drop = ["setpriv", f"--reuid={self.kicker_uid}", f"--regid={self.kicker_gid}",
                f"--groups={self.kicker_groups}", "--inh-caps=-all", "--",
                "env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                f"HOME={self.kicker_home}"]
        return self.namespaced(drop + argv)

    def trigger_directly(self, original_command: str) -> subprocess.CompletedProcess[str]:
        """The forced command run as sshd runs it for the trigger user, without ssh in between."""
        drop = ["setpriv", f"--reuid={self.trigger_uid}", f"--regid={self.trigger_uid}", "--init-groups",
                "--inh-caps=-all", "--", "env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin:/usr/games",
                f"HOME={self.trigger_home}", f"USER={self.trigger_user}", f"LOGNAME={self.trigger_user}",
                "SHELL=/bin/sh", f"SSH_CONNECTION=127.0.0.1 50000 127.0.0.1 {self.port}",
                f"SSH_ORIGINAL_COMMAND={original_command}", "/bin/sh", "-c", self.forced_command]
        return subprocess.run(self.namespaced(drop), capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL, cwd=self.trigger_home)

    def log_mark(self) -> int:
        return self.sshd_log.stat().st_size

    def log_since(self, mark: int) -> str:
        time.sleep(0.2)  # sshd writes its last lines as the connection closes
        with open(self.sshd_log, encoding="utf-8", errors="replace") as f:
            f.seek(mark)
            return f.read()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _free_uid(taken: set[int]) -> int:
    return next(u for u in range(64900, 65500) if u not in taken)


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True)
    return Path(f"{path}.pub").read_text().strip()


def _agent() -> Path:
    """The agent binary, freshly built, or the one MBA_AGENT_BIN names (a work tree that shares another's build); it
    must have the `trigger` subcommand this suite is about."""
    given = os.environ.get("MBA_AGENT_BIN")
    if given:
        binary = Path(given).resolve()
        assert binary.is_file(), f"MBA_AGENT_BIN={given} is not a file"
    else:
        cargo = shutil.which("cargo") or str(Path.home() / ".cargo/bin/cargo")
        out = subprocess.run([cargo, "build", "--bin", "mongo-backup-agent"], cwd=lib.REPO, capture_output=True,
                             text=True, timeout=3600)
        assert out.returncode == 0, f"cargo build failed:\n{out.stderr[-4000:]}"
        binary = lib.REPO / "target" / "debug" / "mongo-backup-agent"
        assert binary.is_file(), f"{binary} was not built"
    help_trigger = subprocess.run([str(binary), "help", "trigger"], capture_output=True, text=True, timeout=60)
    assert help_trigger.returncode == 0, f"{binary} has no trigger subcommand:\n{help_trigger.stderr}"
    return binary


def kubelet_secret_file(pod: dict) -> tuple[int, int]:
    """Mode and group kubelet gives the files of the pod's secret volume: root-owned, the item's mode or defaultMode
    (default 0644), and with an fsGroup the files belong to that group and get group read (volume.SetVolumeOwnership
    ORs 0440 into a read-only volume's files)."""
    (volume,) = [v["secret"] for v in pod["volumes"] if "secret" in v]
    modes = {i.get("mode", volume.get("defaultMode", 0o644)) for i in volume.get("items", [])} or {volume.get("defaultMode", 0o644)}
    assert len(modes) == 1, f"one mode for both files expected: {modes}"
    mode = modes.pop()
    fs_group = pod.get("securityContext", {}).get("fsGroup")
    if fs_group is None:
        return mode, 0
    return mode | 0o440, fs_group


ANSIBLE_AUTHORIZED_KEYS = lib.REPO / "ansible" / "roles" / "mongo_backup_agent" / "templates" / "authorized_keys.j2"
PACKAGED_TRIGGER = "/usr/bin/mongo-backup-agent trigger"


def authorized_keys(client_pub: str, from_cidrs: list[str], forced_command: str, trigger_user: str) -> str:
    """The trigger user's authorized_keys as the VM gets it: the Ansible role's template rendered with what Terraform's
    ansible_vars output feeds it, the packaged binary's path swapped for the one under test. Terraform's own
    trigger_authorized_key must describe the same line."""
    import jinja2

    env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    text = env.from_string(ANSIBLE_AUTHORIZED_KEYS.read_text()).render(
        ansible_managed="test",
        mongo_backup_agent_trigger_keys=[{"key": f"{client_pub} {trigger_user}@aks", "from": from_cidrs}],
        mongo_backup_agent_trigger_from=[],
    )
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    assert len(lines) == 1, text

    tf_line = lib.unquote(lib.locals_()["trigger_authorized_key"])
    for k, v in {
        "${var.aks_subnet_cidr}": ",".join(from_cidrs),
        "${local.trigger_forced_command}": lib.literal(lib.locals_()["trigger_forced_command"]),
        "${trimspace(tls_private_key.trigger.public_key_openssh)}": client_pub,
        "${local.trigger_user}": trigger_user,
    }.items():
        assert k in tf_line, f"trigger_authorized_key no longer contains {k}: update this test"
        tf_line = tf_line.replace(k, v)
    assert lines[0] == tf_line, f"Ansible writes\n  {lines[0]}\nTerraform's trigger_authorized_key says\n  {tf_line}"

    assert f'command="{PACKAGED_TRIGGER}"' in lines[0]
    return lines[0].replace(f'command="{PACKAGED_TRIGGER}"', f'command="{forced_command}"') + "\n"


@pytest.fixture(scope="module")
def vm() -> Iterator[Vm]:
    loc = lib.locals_()
    trigger_user = lib.literal(loc["trigger_user"])
    alias = lib.literal(loc["ssh_host_key_alias"])
    pod = lib.rendered_object("CronJob", "mongo-backup")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    kicker_uid, kicker_gid = psc["runAsUser"], psc.get("runAsGroup", 0)
    fs_group = psc.get("fsGroup")
    file_mode, file_group = kubelet_secret_file(pod)
    agent = _agent()

    base = Path(tempfile.mkdtemp(prefix="mba-ssh-"))
    base.chmod(0o755)  # the trigger user must reach its home and the agent binary's directory
    # The agent's side: a config the trigger can read for the socket path (in production it cannot, and falls back to
    # /run/mongo-backup-agent/control.sock), the socket's directory traversable like RuntimeDirectoryMode=0711.
    agent_config = base / "agent" / "config.toml"
    agent_config.parent.mkdir(mode=0o755)
    run_dir = base / "run"
    run_dir.mkdir(mode=0o711)
    run_dir.chmod(0o711)
    socket_path, store = run_dir / "control.sock", base / "store"
    _write_agent_config(agent_config, "mongodb://127.0.0.1:9/", socket_path, store, trigger_user)
    forced_command = f"{agent} --config {agent_config} trigger"
    sshd_dir, secrets = base / "sshd", base / "secrets"
    sshd_dir.mkdir(mode=0o700)
    secrets.mkdir(mode=0o755)
    # The kicker image's /usr/local/bin/try-members (k8s/kicker/Dockerfile: COPY --chmod=0755, root-owned).
    try_members = base / "bin" / "try-members"
    try_members.parent.mkdir(mode=0o755)
    shutil.copy(lib.K8S / "kicker" / "try-members", try_members)
    try_members.chmod(0o755)

    # Accounts, visible only inside the namespaces made by Vm.namespaced.
    host_passwd = Path("/etc/passwd").read_text().splitlines()
    host_group = Path("/etc/group").read_text().splitlines()
    taken = {int(line.split(":")[2]) for line in host_passwd if line.count(":") >= 6}
    trigger_uid = _free_uid(taken | {kicker_uid})
    trigger_home = base / "home" / trigger_user
    kicker_home = base / "kicker-home"
    kicker_home.mkdir(mode=0o555)  # like the pod's read-only root filesystem
    ours = {trigger_user, "kicker"}
    passwd = [ln for ln in host_passwd if ln.split(":")[0] not in ours and ln.split(":")[2:3] not in ([str(trigger_uid)], [str(kicker_uid)])]
    passwd += [
        f"{trigger_user}:*:{trigger_uid}:{trigger_uid}:mongo-backup trigger (test):{trigger_home}:/bin/sh",
        f"kicker:x:{kicker_uid}:{kicker_gid}::{kicker_home}:/usr/sbin/nologin",
    ]
    gids = {trigger_uid, kicker_gid} | ({fs_group} if fs_group is not None else set())
    group = [ln for ln in host_group if ln.split(":")[0] not in ours and int(ln.split(":")[2]) not in gids]
    group += [f"{trigger_user}:x:{trigger_uid}:", f"kicker:x:{kicker_gid}:"]
    if fs_group is not None and fs_group != kicker_gid:
        group.append(f"kicker-fs:x:{fs_group}:")
    (base / "passwd").write_text("\n".join(passwd) + "\n")
    (base / "group").write_text("\n".join(group) + "\n")

    # The VM side: host key, and the trigger user's authorized_keys as the Ansible role writes it (StrictModes-clean).
    host_pub = _keygen(sshd_dir / "ssh_host_ed25519_key")
    client_pub = _keygen(base / "client_key")
    (trigger_home / ".ssh").mkdir(parents=True, mode=0o700)
    (trigger_home / ".ssh" / "authorized_keys").write_text(authorized_keys(client_pub, ["127.0.0.1/32"], forced_command, trigger_user))
    # Owners and modes as the Ansible role sets them: root's, so the trigger user cannot rewrite its forced command.
    for path, mode in ((trigger_home, 0o755), (trigger_home / ".ssh", 0o755), (trigger_home / ".ssh" / "authorized_keys", 0o644)):
        os.chown(path, 0, 0)
        path.chmod(mode)

    # The pod side: the Secret's two keys as kubelet mounts them.
    shutil.copy(base / "client_key", secrets / "id_ed25519")
    (secrets / "known_hosts").write_text(f"{alias} {host_pub}\n")  # = local.known_hosts (test_consistency checks)
    for name in ("id_ed25519", "known_hosts"):
        os.chown(secrets / name, 0, file_group)
        (secrets / name).chmod(file_mode)

    port = _free_port()
    sshd_log = base / "sshd.log"
    sshd_log.touch()
    config = sshd_dir / "sshd_config"
    config.write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {sshd_dir}/ssh_host_ed25519_key
PidFile {sshd_dir}/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
PermitUserEnvironment no
StrictModes yes
UsePAM no
AllowUsers {trigger_user}
LogLevel VERBOSE
""")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation directory
    vm = Vm(base, port, base / "passwd", base / "group", trigger_user, trigger_uid, trigger_home, forced_command,
            kicker_uid, kicker_gid, ",".join(str(g) for g in sorted(gids - {trigger_uid})), kicker_home, secrets,
            file_mode, file_group, sshd_log, agent, agent_config, socket_path, store, try_members)
    test = subprocess.run(vm.namespaced(["/usr/sbin/sshd", "-t", "-f", str(config)]), capture_output=True, text=True)
    assert test.returncode == 0, f"sshd -t rejected the test config:\n{test.stderr}"
    sshd = subprocess.Popen(vm.namespaced(["/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(sshd_log)]))
    try:
        deadline = time.monotonic() + 15
        while True:
            assert sshd.poll() is None, f"sshd exited with {sshd.returncode}:\n{sshd_log.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"sshd did not listen on {port}:\n{sshd_log.read_text()}"
                time.sleep(0.1)
        yield vm
    finally:
        sshd.terminate()
        try:
            sshd.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sshd.kill()
            sshd.wait()
        shutil.rmtree(base, ignore_errors=True)


def cronjob_command(vm: Vm, remote_command: str | None = None, secrets: Path | None = None,
                    hosts: str = "127.0.0.1") -> list[str]:
    """The rendered CronJob's command with only the port and the /secrets directory substituted, try-members at its
    place in this test, and `hosts` as the member list the ConfigMap would give it."""
    container = lib.cronjob_container()
    cmd = list(container["command"])
    env_names = {e["name"] for e in container["env"]}
    used = {v for arg in cmd for v in re.findall(r"\$\((\w+)\)", arg)}
    assert used == {"MONGO_VM_SSH_PORT"} and used <= env_names, (used, env_names)
    assert {"MBA_TARGET_HOSTS", "MONGO_VM_HOST"} <= env_names, env_names
    assert cmd[0] == "/usr/local/bin/try-members" and cmd[-2].endswith("@{member}"), cmd
    subs = {"$(MONGO_VM_SSH_PORT)": str(vm.port), "/secrets/": f"{secrets or vm.secrets}/"}
    out = []
    for arg in cmd[1:]:
        for k, v in subs.items():
            arg = arg.replace(k, v)
        out.append(arg)
    assert sum(a != b for a, b in zip(cmd[1:], out)) == 3, f"expected to substitute the port and the 2 secret paths: {out}"
    if remote_command is not None:
        assert out[-1] == "run-now"
        out[-1] = remote_command
    return ["env", f"MBA_TARGET_HOSTS={hosts}", str(vm.try_members), *out]


def _masked(text: str) -> str:
    return re.sub(r"\d+", "#", text)


# ---------------------------------------------------------------------------------------------------------------------
# The real agent: a `serve` daemon the trigger talks to, and MongoDB servers for it to back up

def _write_agent_config(path: Path, mongodb_uri: str, socket_path: Path, store: Path, group: str) -> None:
    path.write_text(f"""\
# tests/infra/test_ssh.py: the agent behind the loopback sshd
[mongodb]
uri = {json.dumps(mongodb_uri)}
[storage]
path = {json.dumps(str(store))}
prefix = "ssh"
[daemon]
socket = {json.dumps(str(socket_path))}
socket_group = {json.dumps(group)}
[backup]
include = [{json.dumps(KICK_DB + ".*")}]
oplog = "off"
[retention]
prune_after_backup = false
""")
    path.chmod(0o644)


KICK_DB = "mba_ssh_kick"
KICK_DOCS = 250


def _mongodb_uri() -> str:
    uri = os.environ.get("MBA_TEST_MONGODB_URI")
    assert uri, "MBA_TEST_MONGODB_URI is not set: run this suite under tests/harness/with-services.sh (make test-infra does)"
    return uri


def _wait_port(port: int, proc: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, f"{what} exited with {proc.returncode}:\n{log.read_text()}"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"{what} did not listen on {port}:\n{log.read_text()}"
            time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Agent:
    """A running `serve` and what it writes."""

    vm: Vm
    proc: subprocess.Popen
    log: Path

    def manifests(self) -> list[Path]:
        return sorted(self.vm.store.rglob("manifest.json"))

    def status(self) -> dict:
        out = subprocess.run([str(self.vm.agent), "--config", str(self.vm.agent_config), "status", "--json"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"status failed: {out.stderr}\n{self.log.read_text()}"
        return json.loads(out.stdout)


@contextlib.contextmanager
def running_agent(vm: Vm, mongodb_uri: str) -> Iterator[Agent]:
    """Starts the agent's daemon for `mongodb_uri`, in the test users' namespace (so it hands its socket to the trigger
    user's group), waits until `status` answers, and stops it with SIGTERM at the end."""
    _write_agent_config(vm.agent_config, mongodb_uri, vm.socket, vm.store, vm.trigger_user)
    shutil.rmtree(vm.store, ignore_errors=True)  # each daemon starts with an empty store
    log = vm.base / "agent.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(vm.namespaced([str(vm.agent), "--config", str(vm.agent_config), "serve"]),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    agent = Agent(vm, proc, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"serve exited with {proc.returncode}:\n{log.read_text()}"
            probe = subprocess.run([str(vm.agent), "--config", str(vm.agent_config), "status"], capture_output=True,
                                   timeout=30)
            if probe.returncode == 0:
                break
            assert time.monotonic() < deadline, f"serve never answered status:\n{log.read_text()}"
            time.sleep(0.2)
        yield agent
    finally:
        _stop(proc)
        assert proc.returncode == 0, f"serve exited {proc.returncode} on SIGTERM:\n{log.read_text()}"


@contextlib.contextmanager
def own_mongodb(base: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A SecantusDB server of this test's own, so the test can stop it under the agent's feet."""
    binary = os.environ.get("MBA_SECANTUSD")
    assert binary, "MBA_SECANTUSD is not set: run this suite under tests/harness/with-services.sh (make test-infra does)"
    data = Path(tempfile.mkdtemp(prefix="secantus-", dir=base))
    port = _free_port()
    log = data / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([binary, "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(data / "db"),
                                 "--cache-size", "256M"], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_port(port, proc, "secantusd-rs", log)
        yield f"mongodb://127.0.0.1:{port}/", proc
    finally:
        _stop(proc)


def _seed(uri: str) -> None:
    from pymongo import MongoClient

    with MongoClient(uri, serverSelectionTimeoutMS=10000) as client:
        coll = client[KICK_DB]["orders"]
        coll.drop()
        coll.insert_many([{"_id": i, "qty": i % 7} for i in range(KICK_DOCS)])


# ---------------------------------------------------------------------------------------------------------------------
# The kick works, and its exit status is the trigger's

HOSTILE = ["rm -rf /", "run-now; id", "/bin/sh", "run-now run-now", "status --json", "restore latest"]


def test_without_a_daemon_the_kick_fails_and_says_so(vm: Vm) -> None:
    mark = vm.log_mark()
    via_ssh = vm.as_kicker(cronjob_command(vm))
    log = vm.log_since(mark)
    assert f"Accepted publickey for {vm.trigger_user}" in log, f"ssh did not log in:\n{via_ssh.stderr}\n{log}"

    direct = vm.trigger_directly("run-now")
    assert via_ssh.returncode == direct.returncode == 3, (
        f"Job status {via_ssh.returncode}, trigger's {direct.returncode}, want 3 (no daemon)\n"
        f"ssh: {via_ssh.stderr}\ndirect: {direct.stderr}"
    )
    # What the trigger says reaches the Job's log (numbers masked: timestamps and durations differ between runs).
    assert _masked(direct.stderr).strip() in _masked(via_ssh.stderr), (direct.stderr, via_ssh.stderr)
    assert _masked(direct.stdout) == _masked(via_ssh.stdout), (direct.stdout, via_ssh.stdout)
    assert "daemon is not running" in via_ssh.stderr, via_ssh.stderr
    # An empty command (`ssh host` with no command) is run-now too (issue 5), so it fails the same way.
    empty = vm.as_kicker(cronjob_command(vm)[:-1])
    assert empty.returncode == via_ssh.returncode, empty.stderr
    assert "daemon is not running" in empty.stderr, empty.stderr


@pytest.mark.parametrize("hostile", HOSTILE)
def test_any_other_command_exits_2(vm: Vm, hostile: str) -> None:
    via_ssh = vm.as_kicker(cronjob_command(vm, remote_command=hostile))
    assert via_ssh.returncode == 2, f"ssh … {hostile!r} exited {via_ssh.returncode}:\n{via_ssh.stdout}{via_ssh.stderr}"
    assert "refused SSH command" in via_ssh.stderr, via_ssh.stderr
    assert vm.trigger_directly(hostile).returncode == 2


def test_kick_runs_a_backup_and_returns_its_exit_status(vm: Vm) -> None:
    """The CronJob's command against a running daemon: a real backup, exit 0; an empty command does the same; every
    other command is refused with exit 2 and starts nothing; `status` answers."""
    uri = _mongodb_uri()
    _seed(uri)
    with running_agent(vm, uri) as agent:
        via_ssh = vm.as_kicker(cronjob_command(vm))
        assert via_ssh.returncode == 0, f"{via_ssh.stdout}{via_ssh.stderr}\n{agent.log.read_text()}"
        assert f"complete: {KICK_DOCS} documents" in via_ssh.stdout + via_ssh.stderr, via_ssh.stdout + via_ssh.stderr
        assert len(agent.manifests()) == 1, agent.manifests()
        manifest = json.loads(agent.manifests()[0].read_text())
        assert manifest["status"] == "complete", manifest
        assert {n["namespace"]: n["documents"] for n in manifest["namespaces"]} == {f"{KICK_DB}.orders": KICK_DOCS}

        empty = vm.as_kicker(cronjob_command(vm)[:-1])
        assert empty.returncode == via_ssh.returncode, f"empty command: {empty.stderr}"
        assert len(agent.manifests()) == 2, "an empty command did not back up like run-now"

        runs = len(agent.status()["recent"])
        canary = vm.base / "pwned"
        for hostile in HOSTILE + [f"touch {canary}", f"run-now; touch {canary}", f"$(touch {canary})"]:
            out = vm.as_kicker(cronjob_command(vm, remote_command=hostile))
            assert out.returncode == 2, f"{hostile!r} exited {out.returncode}: {out.stderr}"
        assert not canary.exists(), "a refused command ran"
        assert len(agent.manifests()) == 2, "a refused command started a backup"
        assert len(agent.status()["recent"]) == runs, "a refused command reached the daemon"

        status = vm.as_kicker(cronjob_command(vm, remote_command="status"))
        assert status.returncode == 0, status.stderr
        direct = vm.trigger_directly("status")
        assert direct.returncode == 0 and _masked(direct.stdout) == _masked(status.stdout), (direct, status)
        assert "ssh" in status.stdout, status.stdout


def test_kick_reports_a_failed_backup_with_a_nonzero_exit(vm: Vm) -> None:
    """The daemon's MongoDB goes away after it started: the kick's backup fails and ssh exits 1, the Job fails."""
    with own_mongodb(vm.base) as (uri, server):
        _seed(uri)
        with running_agent(vm, uri) as agent:
            _stop(server)
            via_ssh = vm.as_kicker(cronjob_command(vm))
            assert via_ssh.returncode == 1, f"{via_ssh.returncode}: {via_ssh.stdout}{via_ssh.stderr}"
            assert "failed" in via_ssh.stderr.lower() and "mongodb" in via_ssh.stderr.lower(), via_ssh.stderr
            assert agent.manifests() == [], "a failed backup left a manifest"
            assert agent.status()["recent"][0]["outcome"] == "failed"


# ---------------------------------------------------------------------------------------------------------------------
# A replica set: the CronJob tries the members in order until one answers (k8s/kicker/try-members)

def test_a_member_refusing_connections_is_skipped_for_the_next(vm: Vm) -> None:
    """Nothing listens on 127.0.0.2 at the sshd's port: ssh exits 255 there, and the next member, the real sshd, runs
    the trigger, whose status (3: no daemon) becomes the Job's."""
    mark = vm.log_mark()
    out = vm.as_kicker(cronjob_command(vm, hosts="127.0.0.2 127.0.0.1"))
    log = vm.log_since(mark)
    assert out.returncode == 3, f"{out.returncode}: {out.stderr}"
    assert "Connection refused" in out.stderr, out.stderr
    assert "127.0.0.2: ssh could not get the command run there (exit 255), trying the next member" in out.stderr
    assert "member 2/2: 127.0.0.1" in out.stderr and "daemon is not running" in out.stderr, out.stderr
    assert log.count(f"Accepted publickey for {vm.trigger_user}") == 1, log


def test_an_answer_from_the_first_member_ends_the_run(vm: Vm) -> None:
    """Once a member answered, its status is returned as it is, whatever it is, and the next member is never tried.
    The canary on the second member's address proves it would be: tried first, it is reached (and, speaking no SSH,
    skipped with 255)."""
    hosts = "127.0.0.1 127.0.0.2"
    with canary_listener(("127.0.0.2", vm.port)) as (_, reached):
        no_daemon = vm.as_kicker(cronjob_command(vm, hosts=hosts))
        refused = vm.as_kicker(cronjob_command(vm, remote_command="restore latest", hosts=hosts))
        assert not reached, "try-members went on to the next member after the first one answered"
        control = vm.as_kicker(cronjob_command(vm, hosts="127.0.0.2 127.0.0.1"))
        assert reached, "the canary member was never tried: this test cannot tell"
    assert no_daemon.returncode == 3 and "daemon is not running" in no_daemon.stderr, no_daemon.stderr
    assert refused.returncode == 2 and "refused SSH command" in refused.stderr, refused.stderr
    for out in (no_daemon, refused):
        assert "member 2/2" not in out.stderr, out.stderr
    assert control.returncode == 3 and "member 2/2: 127.0.0.1" in control.stderr, control.stderr


def test_no_member_answering_fails_the_job(vm: Vm) -> None:
    out = vm.as_kicker(cronjob_command(vm, hosts="127.0.0.2,127.0.0.3"))
    assert out.returncode == 255, f"{out.returncode}: {out.stderr}"
    assert "no member answered (127.0.0.2 127.0.0.3): the backup did not run" in out.stderr, out.stderr


def test_the_single_host_of_an_older_configmap_still_works(vm: Vm) -> None:
    """A ConfigMap from before replica-set support has no hosts key: MBA_TARGET_HOSTS is then unset (optional) and
    try-members kicks MONGO_VM_HOST alone."""
    cmd = cronjob_command(vm)
    assert cmd[:2] == ["env", "MBA_TARGET_HOSTS=127.0.0.1"], cmd
    out = vm.as_kicker(["env", "MONGO_VM_HOST=127.0.0.1", *cmd[2:]])
    assert out.returncode == 3 and "member 1/1: 127.0.0.1" in out.stderr, out.stderr
    nothing = vm.as_kicker(cmd[2:])
    assert nothing.returncode == 2 and "no member to kick" in nothing.stderr, nothing.stderr


@pytest.mark.parametrize("hosts", ["127.0.0.1;id", "$(id)", "-oProxyCommand=id"])
def test_a_bad_member_address_is_refused_before_any_connection(vm: Vm, hosts: str) -> None:
    mark = vm.log_mark()
    out = vm.as_kicker(cronjob_command(vm, hosts=f"127.0.0.1 {hosts}"))
    assert out.returncode == 2 and "is not a host name or IP address" in out.stderr, out.stderr
    assert "Connection from" not in vm.log_since(mark), "a connection was made before the member list was checked"


def test_known_hosts_with_every_members_key_accepts_any_of_them(vm: Vm) -> None:
    """Terraform's known_hosts has one line per member under the one alias: whichever member answers, its key is one
    of them, wherever its line is."""
    alias, line = (vm.secrets / "known_hosts").read_text().split(maxsplit=1)
    others = [_keygen(vm.base / f"member{n}_host_key") for n in (2, 3)]
    secrets = _secrets_with(vm, "secrets-three-members",
                            known_hosts=f"{alias} {others[0]}\n{alias} {others[1]}\n{alias} {line}")
    out = vm.as_kicker(cronjob_command(vm, secrets=secrets))
    assert out.returncode == 3 and "daemon is not running" in out.stderr, out.stderr


def test_stopping_the_pod_stops_ssh_and_tries_no_further_member(vm: Vm) -> None:
    """kubelet stops a pod with SIGTERM to its command, try-members: ssh must get it (or the session would outlive the
    Job), and the run must end there instead of moving on to the next member."""
    opts, dest = _ssh_options(vm, hosts="127.0.0.1 127.0.0.2")
    mark = vm.log_mark()
    with canary_listener(("127.0.0.2", vm.port)) as (_, reached):
        # -N: a session that stays open until ssh is told to stop.
        kick = subprocess.Popen(vm.kicker_argv([*opts, "-N", dest]), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd="/")
        try:
            deadline = time.monotonic() + 30
            while f"Accepted publickey for {vm.trigger_user}" not in vm.log_since(mark):
                assert kick.poll() is None and time.monotonic() < deadline, "ssh never logged in"
            # The kicker's try-members, under unshare, sh, setpriv and env, which all exec: signal it directly.
            pid = int(subprocess.run(["pgrep", "-f", "-n", f"^/bin/bash {vm.try_members}"], capture_output=True,
                                     text=True, check=True).stdout)
            os.kill(pid, signal.SIGTERM)
            _, stderr = kick.communicate(timeout=30)
        finally:
            if kick.poll() is None:
                kick.kill()
                kick.wait()
        assert not reached, "try-members moved on to the next member after SIGTERM"
    # ssh ended within the timeout above (its own status: OpenSSH closes an -N session cleanly on SIGTERM).
    assert "stopped by SIGTERM while 127.0.0.1 was running; not trying further members" in stderr, stderr


def test_kick_fails_over_to_the_next_member_and_returns_its_backup(vm: Vm) -> None:
    """With a daemon behind the second member: the first refuses, the second runs a real backup, the Job gets 0."""
    uri = _mongodb_uri()
    _seed(uri)
    with running_agent(vm, uri) as agent:
        out = vm.as_kicker(cronjob_command(vm, hosts="127.0.0.2 127.0.0.1"))
        assert out.returncode == 0, f"{out.stdout}{out.stderr}\n{agent.log.read_text()}"
        assert f"complete: {KICK_DOCS} documents" in out.stdout + out.stderr, out.stdout + out.stderr
        assert len(agent.manifests()) == 1, agent.manifests()


# ---------------------------------------------------------------------------------------------------------------------
# What must be refused (independent of the agent: ssh and sshd refuse before any command runs)

def _secrets_with(vm: Vm, name: str, known_hosts: str | None = None, key_from: Path | None = None) -> Path:
    d = vm.base / name
    d.mkdir(mode=0o755)
    shutil.copy(key_from or vm.secrets / "id_ed25519", d / "id_ed25519")
    (d / "known_hosts").write_text(known_hosts if known_hosts is not None else (vm.secrets / "known_hosts").read_text())
    for f in ("id_ed25519", "known_hosts"):
        os.chown(d / f, 0, vm.secret_group)
        (d / f).chmod(vm.secret_mode)
    return d


def test_wrong_host_key_is_refused(vm: Vm) -> None:
    alias = (vm.secrets / "known_hosts").read_text().split()[0]
    impostor = _keygen(vm.base / "impostor_host_key")
    secrets = _secrets_with(vm, "secrets-wrong-host", known_hosts=f"{alias} {impostor}\n")
    mark = vm.log_mark()
    out = vm.as_kicker(cronjob_command(vm, secrets=secrets))
    assert out.returncode == 255
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in out.stderr and "Host key verification failed" in out.stderr, out.stderr
    assert "Accepted publickey" not in vm.log_since(mark), "the client authenticated to a host it should not trust"


def test_unknown_host_is_not_trusted_on_first_use(vm: Vm) -> None:
    host_line = (vm.secrets / "known_hosts").read_text().split(maxsplit=1)[1]
    secrets = _secrets_with(vm, "secrets-other-alias", known_hosts=f"some-other-host {host_line}")
    out = vm.as_kicker(cronjob_command(vm, secrets=secrets))
    assert out.returncode == 255 and "Host key verification failed" in out.stderr, out.stderr
    assert (secrets / "known_hosts").read_text().startswith("some-other-host "), "ssh must not add keys to known_hosts"


def test_key_not_in_authorized_keys_is_refused(vm: Vm) -> None:
    _keygen(vm.base / "stranger_key")
    secrets = _secrets_with(vm, "secrets-stranger", key_from=vm.base / "stranger_key")
    out = vm.as_kicker(cronjob_command(vm, secrets=secrets))
    assert out.returncode == 255 and "Permission denied (publickey)" in out.stderr, out.stderr


def test_key_is_refused_from_outside_the_from_restriction(vm: Vm) -> None:
    """The authorized_keys from= (Terraform: the AKS subnet) is enforced: the same key from 127.0.0.2 is refused."""
    cmd = cronjob_command(vm)
    i = cmd.index("ssh") + 1
    out = vm.as_kicker(cmd[:i] + ["-b", "127.0.0.2"] + cmd[i:])
    assert out.returncode == 255 and "Permission denied (publickey)" in out.stderr, out.stderr


# ---------------------------------------------------------------------------------------------------------------------
# The key is no tunnel: authorized_keys' `restrict` refuses port forwarding, local (-L) and stdio (-W) alike

@contextlib.contextmanager
def canary_listener(address: tuple[str, int] = ("127.0.0.1", 0)) -> Iterator[tuple[int, list[bool]]]:
    """A TCP listener on loopback standing in for something inside the network; records whether anyone reached it."""
    srv = socket.socket()
    srv.bind(address)
    srv.listen()
    srv.settimeout(0.2)
    reached: list[bool] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            reached.append(True)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield srv.getsockname()[1], reached
    finally:
        stop.set()
        thread.join()
        srv.close()


def _ssh_options(vm: Vm, hosts: str = "127.0.0.1") -> tuple[list[str], str]:
    """The CronJob's ssh command without its remote command, split before the destination."""
    cmd = cronjob_command(vm, hosts=hosts)
    assert cmd[-1] == "run-now" and "@" in cmd[-2], cmd
    return cmd[:-2], cmd[-2]


def test_stdio_forwarding_is_refused(vm: Vm) -> None:
    opts, dest = _ssh_options(vm)
    with canary_listener() as (port, reached):
        out = vm.as_kicker([*opts, "-W", f"127.0.0.1:{port}", dest], timeout=60)
    assert out.returncode == 255, f"ssh -W exited {out.returncode}: {out.stderr}"
    assert "administratively prohibited" in out.stderr, out.stderr
    assert not reached, "ssh -W reached the canary through the VM"


def test_local_port_forwarding_is_refused(vm: Vm) -> None:
    opts, dest = _ssh_options(vm)
    # -n and -T are in the CronJob's options already; -N: no remote command, only the forward.
    assert "-n" in opts and "-T" in opts, opts
    local = _free_port()
    with canary_listener() as (port, reached):
        ssh = subprocess.Popen(vm.kicker_argv([*opts, "-N", "-L", f"127.0.0.1:{local}:127.0.0.1:{port}", dest]),
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd="/")
        try:
            deadline = time.monotonic() + 30
            while True:  # the client listens locally once it has logged in
                assert ssh.poll() is None, f"ssh -L exited {ssh.returncode}: {ssh.stderr.read() if ssh.stderr else ''}"
                try:
                    conn = socket.create_connection(("127.0.0.1", local), timeout=1)
                    break
                except OSError:
                    assert time.monotonic() < deadline, "ssh -L never listened"
                    time.sleep(0.1)
            with conn:
                conn.settimeout(10)
                conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
                try:
                    back = conn.recv(100)
                except ConnectionResetError:
                    back = b""  # the client drops the connection when the server refuses the channel
                assert back == b"", "data came back through the forward"
        finally:
            ssh.terminate()
            _, stderr = ssh.communicate(timeout=30)
    assert "administratively prohibited" in stderr, stderr
    assert not reached, "ssh -L reached the canary through the VM"
