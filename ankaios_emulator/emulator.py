"""The emulated Ankaios server plus one agent: desired state, workload states, sessions.

The server part answers requests (``server/src/ankaios_server.rs``): updates through the
state engine, filtered state, events, logs bookkeeping. The agent part runs the workloads
assigned to its agent name through a runtime and serves the control interfaces.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ankaios_sdk._protos import _ank_base as ank_base

from ankaios_model.state import RenderedWorkload, UpdateError, UpdateOutcome, filter_tree
from ankaios_model.tree import tree_to_proto

from .authorizer import Authorizer
from .config import DEFAULT_ACCESS, EmulatorError, load_access, load_image_map, load_state
from .dependencies import DeleteGraph, StateTree, add_condition_met, delete_condition_met
from .events import altered_fields, diff
from .faults import Faults
from .logs import LogCampaign, LogOptions
from .runtime import (
    AGENT_DISCONNECTED,
    NOT_SCHEDULED,
    PENDING_INITIAL,
    PENDING_WAITING_TO_START,
    REMOVED,
    RUNNING,
    STOPPING_REQUESTED,
    STOPPING_WAITING_TO_STOP,
    ExecState,
    Runtime,
    StderrEcho,
)
from .runtimes import (
    ProcessRuntime,
    SimulateRuntime,
    UnsupportedRuntime,
    create_runtime,
    is_supported,
)
from .scheduler import Scheduler
from .server_restart import plan_restart
from .session import Session

log = logging.getLogger(__name__)

CONTROL_INTERFACE_SUBDIR = "control_interface"
NO_CONTENT = "The Request does not contain any content"

# Stopping substates that later runtime reports must not overwrite
# (ExecutionStateSpec::transition in ankaios_api/src/ank_base/workload_state.rs).
_STICKY_STOPPING = {"RequestedAtRuntime", "WaitingToStop"}


@dataclass(frozen=True)
class _PendingDelete:
    """A deleted instance (or the old one of an update) waiting for its delete conditions."""

    workload: RenderedWorkload
    # dependent workload name -> delete condition, from the server's delete graph
    conditions: dict[str, str]


class Emulator:
    """Eclipse Ankaios 1.0 (server + one agent) as seen through the control interface."""

    def __init__(
        self,
        control_interface: Path | str | None = None,
        *,
        access: Mapping[str, Any] | None = None,
        state: str | Path | Mapping[str, Any] | None = None,
        runtime: str = "simulate",
        agent: str = "agent_A",
        workload_name: str = "fleetconnector",
        run_dir: Path | str | None = None,
        image_map: Mapping[str, Any] | str | Path | None = None,
        step_delay: float = 0.02,
        reaccept_on_reconnect: bool = True,
        pace_frames: bool = True,
        workload_output: bool = True,
        agents: Mapping[str, Mapping[str, str]] | Sequence[str] = (),
        state_agents: bool = False,
    ) -> None:
        self._workload_output = workload_output
        self._ci_path = Path(control_interface) if control_interface is not None else None
        # An explicit access tree overrides the served workload's own rules.
        self._access_override = load_access(access) if access is not None else None
        self._agent = agent
        self._workload_name = workload_name
        self._run_dir = Path(run_dir) if run_dir is not None else None
        self._runtime_name = runtime
        self._step_delay = step_delay
        self._reaccept = reaccept_on_reconnect
        self._pace_frames = pace_frames
        self._image_map = load_image_map(image_map)
        self._desired = load_state(state)
        # A restarted server starts again from the startup manifest (it persists nothing).
        self._startup = copy.deepcopy(self._desired)
        self._access = self._served_access()
        if self._ci_path is None and self._run_dir is None:
            raise EmulatorError("give a control interface directory or a run directory")

        self.faults = Faults()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._states: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
        # The emulated agents and the tags each one's AgentHello brings (tags set at
        # runtime are lost when the server restarts or the agent reconnects).
        self._agent_tags: dict[str, dict[str, str]] = {agent: {}}
        extra = agents.items() if isinstance(agents, Mapping) else ((a, {}) for a in agents)
        for name, tags in extra:
            self._agent_tags[str(name)] = {str(k): str(v) for k, v in tags.items()}
        if state_agents:
            for workload in self._desired.rendered().values():
                if workload.agent:
                    self._agent_tags.setdefault(workload.agent, {})
        # The agents map of the complete state: the connected agents.
        self._agents: dict[str, dict[str, Any]] = {
            name: self._hello_attributes(name) for name in self._agent_tags
        }
        # Set while the emulated server is down (restart_server): requests wait in the
        # agent's channel to the server and reach the new one.
        self._server_down = False
        # (agent, workload name, request) waiting for the server or for their agent's
        # reconnection
        self._queued_requests: list[tuple[str, str, Any]] = []
        # the agents' own view of their instances' states (what a ServerHello is
        # matched against)
        self._local_states: dict[str, ExecState] = {}
        self._stopped = threading.Event()
        self._requests: list[Any] = []
        self._sessions: dict[str, Session] = {}
        self._main_session: Session | None = None
        # (session, request id) -> subscribed masks
        self._subscriptions: dict[tuple[Session, str], list[str]] = {}
        self._campaigns: dict[tuple[Session, str], LogCampaign] = {}
        # instances of our agent the runtime runs (or is about to)
        self._active: dict[str, RenderedWorkload] = {}
        self._waiting: dict[str, RenderedWorkload] = {}
        self._stopping: dict[str, RenderedWorkload] = {}
        self._pending_deletes: dict[str, _PendingDelete] = {}
        # old instance name -> the instance that starts once the old one is removed
        self._replacements: dict[str, RenderedWorkload] = {}
        # the server's delete graph (delete conditions of ADD_COND_RUNNING dependencies)
        self._delete_graph = DeleteGraph()
        # instances of other agents whose states our agent received at its hello
        self._known_at_hello: set[str] = set()
        self._starts: dict[str, int] = {}
        self._scheduler: Scheduler | None = None
        self._runtime: Runtime | None = None
        self._external: SimulateRuntime | None = None
        self._unsupported: UnsupportedRuntime | None = None
        self._temp_run_dir: Path | None = None
        self._started = False

    def _hello_attributes(self, agent: str) -> dict[str, Any]:
        attributes: dict[str, Any] = {"status": {"cpuUsage": 0, "freeMemory": _free_memory()}}
        if self._agent_tags[agent]:
            attributes["tags"] = dict(self._agent_tags[agent])
        return attributes

    def _served_access(self) -> dict[str, Any]:
        """The rules of the workload served at ``control_interface``.

        ``access`` if given; else that workload's ``controlInterfaceAccess`` in the
        startup state (as the agent takes it from the workload, runtime_manager.rs); a
        workload that is not in the startup state gets ReadWrite on ``*``.
        """
        if self._access_override is not None:
            return self._access_override
        served = self._desired.rendered().get(self._workload_name)
        if served is None:
            return copy.deepcopy(DEFAULT_ACCESS)
        return copy.deepcopy(served.control_interface_access)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Emulator:
        """Create the FIFOs, open them for reading and run the startup manifest."""
        if self._started:
            return self
        self._stopped.clear()
        self._scheduler = Scheduler()
        if self._run_dir is None and self._runtime_name in ("process", "podman"):
            # Process workloads with controlInterfaceAccess need a directory of their own.
            self._temp_run_dir = Path(tempfile.mkdtemp(prefix="ankaios-emulator-"))
            self._run_dir = self._temp_run_dir
        try:
            self._runtime = create_runtime(
                self._runtime_name,
                self._on_runtime_state,
                self._scheduler,
                step_delay=self._step_delay,
                image_map=self._image_map,
            )
            if self._workload_output:
                self._runtime.echo = StderrEcho()
            self._external = SimulateRuntime(
                self._on_runtime_state, self._scheduler, self._step_delay
            )
            self._unsupported = UnsupportedRuntime(self._on_runtime_state)
            if self._ci_path is not None and self._access.get("allowRules"):
                # Like needs_control_interface (ankaios_api/src/ank_base/workload.rs): no
                # allow rules, no FIFOs.
                self._main_session = self._new_session(
                    self._ci_path, self._workload_name, Authorizer.from_tree(self._access)
                )
                self._main_session.authorizer_source = copy.deepcopy(self._access)
            elif self._ci_path is not None:
                log.warning(
                    "%s has no allow rules: no control interface in %s (as in Ankaios)",
                    self._workload_name,
                    self._ci_path,
                )
            self._started = True
            with self._mutation():
                added = sorted(self._desired.rendered().values(), key=lambda w: w.name)
                self._set_initial_states(added)
            with self._lock:
                # The server's start() runs the startup state through its update.
                self._delete_graph.insert(added)
                # Our agent connects after the server started; its hello brings it the
                # states of every other agent's workloads (Pending(Initial) ones included).
                self._known_at_hello = {
                    w.instance_name for w in added if w.agent not in self._agents
                }
            self._agent_update([w for w in added if w.agent in self._agents], [])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop everything promptly: sessions, workloads, timers; remove the FIFOs."""
        self._stopped.set()
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
            campaigns = list(self._campaigns.values())
            self._campaigns.clear()
            self._subscriptions.clear()
            self._started = False
        for campaign in campaigns:
            campaign.cancel()
        if self._scheduler is not None:
            self._scheduler.stop()
        for session in sessions:
            session.stop(remove=True)
        if self._runtime is not None:
            self._runtime.shutdown()
        if self._external is not None:
            self._external.shutdown()
        for campaign in campaigns:
            campaign.join(0.5)
        if self._temp_run_dir is not None:
            shutil.rmtree(self._temp_run_dir, ignore_errors=True)
            self._temp_run_dir = None
            self._run_dir = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- public inspection API ---------------------------------------------------------

    @property
    def control_interface(self) -> Path:
        if self._ci_path is None:
            raise EmulatorError("no single control interface; use control_interface_of(name)")
        return self._ci_path

    def control_interface_of(self, workload_name: str) -> Path:
        with self._lock:
            if self._ci_path is not None and workload_name == self._workload_name:
                return self._ci_path
            session = self._sessions.get(workload_name)
        if session is None:
            raise KeyError(f"workload {workload_name!r} has no control interface")
        return session.directory

    def control_interfaces(self) -> dict[str, Path]:
        with self._lock:
            return {name: s.directory for name, s in self._sessions.items()}

    @property
    def agent(self) -> str:
        return self._agent

    @property
    def server_up(self) -> bool:
        """False while ``restart_server`` has the server down."""
        with self._lock:
            return not self._server_down

    @property
    def connected(self) -> bool:
        session = self._main_session
        if session is None:
            return any(s.connected for s in list(self._sessions.values()))
        return session.connected

    def session(self, workload_name: str | None = None) -> Session:
        with self._lock:
            name = workload_name or self._workload_name
            session = self._sessions.get(name)
        if session is None:
            raise KeyError(f"no control interface for {name!r}")
        return session

    @property
    def requests(self) -> list[Any]:
        with self._lock:
            return list(self._requests)

    def complete_state(self, field_masks: Sequence[str] = ()) -> dict[str, Any]:
        with self._lock:
            tree = self._tree()
        return filter_tree(tree, list(field_masks)) if field_masks else tree

    def instance_names(self, workload_name: str) -> list[str]:
        """Current instance names of a workload (from the workload states)."""
        with self._lock:
            return [
                f"{workload_name}.{iid}.{agent}"
                for agent, per_agent in self._states.items()
                for iid in per_agent.get(workload_name, {})
            ]

    def process_ids(self) -> dict[str, int]:
        runtime = self._runtime
        return runtime.pids() if isinstance(runtime, ProcessRuntime) else {}

    def wait_for(self, predicate: Callable[[Emulator], bool], timeout: float = 5.0) -> None:
        """Block until ``predicate(self)`` holds; re-checked on every change."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"condition not met within {timeout} s")
                self._changed.wait(min(remaining, 0.05))

    def logs(self, instance_name: str) -> list[str]:
        """Output lines of an instance the runtime runs (empty once it is removed)."""
        runtime = self._runtime
        buffer = runtime.logs(instance_name) if runtime is not None else None
        return [line.text for line in buffer.snapshot()[0]] if buffer is not None else []

    def start_count(self, workload_name: str) -> int:
        """How often the runtime started ``workload_name`` (restarts included)."""
        with self._lock:
            return self._starts.get(workload_name, 0)

    def emit_log(self, workload_name: str, line: str) -> None:
        """Append an output line to every running instance of ``workload_name``."""
        runtime = self._runtime
        if runtime is None:
            return
        with self._lock:
            names = [n for n, w in self._active.items() if w.name == workload_name]
        for name in names:
            runtime.log_buffer(name).append(line)

    # -- faults ------------------------------------------------------------------------

    def close_connection(self, reason: str = "Connection closed by the emulator") -> None:
        self.session().close_connection(reason)

    def restart_agent(self, downtime: float = 0.2) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            session.restart_agent(downtime)

    def send_garbage(self, data: bytes) -> None:
        self.session().send_garbage(data)

    def restart_server(self, downtime: float = 1.0) -> None:
        """Restart the emulated Ankaios server; returns once the agent is reconnected.

        As with Ankaios 1.0.1 (details in docs/emulator-semantics.md, section 6): the
        server comes back with the startup manifest and nothing else (workloads and
        configs applied at runtime are gone, workload states start again, event
        subscriptions and log campaigns end, runtime agent tags are lost). ``downtime``
        stands for the restart plus the agent's 1 s reconnect interval; requests sent
        meanwhile reach the new server. The agent then resumes its running workloads
        whose startup instance is unchanged (same process, a new control-interface
        instance that needs a new Hello, FIFO files removed), replaces the others by their
        startup version (new process), deletes the ones applied at runtime and creates
        the missing startup ones.
        """
        with self._lock:
            if not self._started:
                raise EmulatorError("the emulator is not running")
            self._server_down = True
            self._subscriptions.clear()
            campaigns = list(self._campaigns.values())
            self._campaigns.clear()
        log.info("server restart: the server is gone")
        for campaign in campaigns:
            campaign.cancel()
        if self._stopped.wait(downtime):
            return
        self._server_hello()

    @property
    def agents(self) -> list[str]:
        """Every emulated agent, connected or not."""
        return sorted(self._agent_tags)

    def disconnect_agent(self, agent: str) -> None:
        """The agent loses its connection to the server; its workloads keep running.

        As the server handles ``AgentGone`` (``server/src/ankaios_server.rs``): the agent
        leaves ``agents``, every state of its workloads becomes ``AgentDisconnected``
        (events follow, agent data included), event subscriptions of its workloads end,
        log campaigns its workloads requested are cancelled and the requesters of its
        workloads' logs get ``LogsStopResponse``. Requests its workloads send wait until it
        is back; updates for it meanwhile reach it with the ServerHello.
        """
        with self._lock:
            self._check_agent(agent)
            if agent not in self._agents:
                return
            with self._mutation(agents=True):
                del self._agents[agent]
                for per_id in self._states.get(agent, {}).values():
                    for iid in per_id:
                        per_id[iid] = AGENT_DISCONNECTED.to_tree()
            for key in [k for k in self._subscriptions if self._session_agent(k[0]) == agent]:
                del self._subscriptions[key]
            cancelled = [
                c for k, c in self._campaigns.items() if self._session_agent(k[0]) == agent
            ]
            for key in [k for k, c in self._campaigns.items() if c in cancelled]:
                del self._campaigns[key]
            others = list(self._campaigns.values())
        log.info("agent %s disconnected", agent)
        for campaign in cancelled:
            campaign.cancel()
        for campaign in others:
            campaign.stop_agent(agent)

    def reconnect_agent(self, agent: str) -> None:
        """The agent connects again: AgentHello, then the ServerHello it acts on.

        The server lists it in ``agents`` again (tags from its hello; events follow) and
        sends it its workloads; the agent resumes, replaces, deletes and creates as after
        a server restart (docs/emulator-semantics.md, section 6), including new
        control-interface instances for resumed workloads.
        """
        with self._lock:
            self._check_agent(agent)
            if agent in self._agents or not self._started:
                return
            with self._mutation(agents=True):
                self._agents[agent] = self._hello_attributes(agent)
        log.info("agent %s connected", agent)
        self._agent_hello(agent)
        self._release_queued(agent)

    def _check_agent(self, agent: str) -> None:
        if agent not in self._agent_tags:
            raise EmulatorError(f"no emulated agent {agent!r} (agents: {', '.join(self.agents)})")

    def _session_agent(self, session: Session) -> str:
        return self._agent_of_workload(session.workload_name)

    def _server_hello(self) -> None:
        """The new server has started; every connected agent reconnects (ServerHello)."""
        startup = copy.deepcopy(self._startup)
        with self._lock:
            if not self._started:
                return
            with self._mutation():
                self._desired = startup
                self._states = {}
                added = sorted(startup.rendered().values(), key=lambda w: w.name)
                self._set_initial_states(added)
                for name in self._agents:
                    self._agents[name] = self._hello_attributes(name)
            self._delete_graph = DeleteGraph()
            self._delete_graph.insert(added)
            self._known_at_hello = {w.instance_name for w in added if w.agent not in self._agents}
            # Queued operations of the old server are void; what still runs is matched
            # against the ServerHello.
            self._waiting.clear()
            self._pending_deletes.clear()
            self._replacements.clear()
            agents = sorted(self._agents)
        for agent in agents:
            self._agent_hello(agent)
        with self._lock:
            self._server_down = False
        self._run_ready()
        self._release_queued(None)

    def _agent_hello(self, agent: str) -> None:
        """The agent's handling of a ServerHello (``handle_server_hello``)."""
        with self._lock:
            wanted = {n: w for n, w in self._desired.rendered().items() if w.agent == agent}
            running = [
                (w, self._local_state_tree(w)) for w in self._active.values() if w.agent == agent
            ]
            plan = plan_restart(running, wanted)
            # What the agent's scheduler still held for these workloads is superseded.
            for name in [n for n, w in self._waiting.items() if w.agent == agent]:
                del self._waiting[name]
            for name in [n for n, p in self._pending_deletes.items() if p.workload.agent == agent]:
                del self._pending_deletes[name]
            with self._mutation():
                # The resumed workloads' state checkers report them running again.
                for workload in plan.resumed:
                    self._write_state(workload, RUNNING)
            for old, new in plan.replaced:
                self._replacements[old.instance_name] = new
            self._waiting.update({w.instance_name: w for w in plan.created})
            renew = {w.name for w in plan.resumed}
            if (
                self._ci_path is not None
                and self._workload_name not in wanted
                and self._agent_of_workload(self._workload_name) == agent
            ):
                # The client under test runs outside the emulator, so it is never replaced.
                renew.add(self._workload_name)
            sessions = [s for n, s in self._sessions.items() if n in renew]
        log.info(
            "ServerHello to %s: resumed %s, replaced %s, deleted %s, created %s",
            agent,
            [w.name for w in plan.resumed],
            [old.name for old, _ in plan.replaced],
            [w.name for w in plan.deleted],
            [w.name for w in plan.created],
        )
        for session in sessions:
            self._renew_session(session)
        # Deleted at once, without delete conditions (the agent has none after a restart).
        for old, _ in plan.replaced:
            self._stop_instance(old)
        for workload in plan.deleted:
            self._stop_instance(workload)
        self._run_ready()

    def _local_state_tree(self, workload: RenderedWorkload) -> dict[str, Any] | None:
        state = self._local_states.get(workload.instance_name)
        return state.to_tree() if state is not None else None

    def _agent_of_workload(self, name: str) -> str:
        for workload in self._active.values():
            if workload.name == name:
                return workload.agent
        rendered = self._desired.rendered().get(name)
        return rendered.agent if rendered is not None else self._agent

    def _release_queued(self, agent: str | None) -> None:
        """Requests queued for the server (``None``: all) or for ``agent``'s reconnection."""
        with self._lock:
            ready = [q for q in self._queued_requests if agent is None or q[0] == agent]
            self._queued_requests = [q for q in self._queued_requests if q not in ready]
        for _, workload_name, request in ready:
            with self._lock:
                current = self._sessions.get(workload_name)
            if current is not None:
                self.handle_request(current, request)

    def _renew_session(self, old: Session) -> None:
        """A new control-interface instance on the same FIFOs, as the agent makes for a
        resumed workload; dropping the old instance removes the FIFO files."""
        new = self._make_session(
            old.directory, old.workload_name, old.authorizer, hold_until_hello=True
        )
        new.authorizer_source = old.authorizer_source
        # Opened before the old instance lets go, so the client never sees end of file.
        new.start(open_writer=True)
        with self._lock:
            is_main = old is self._main_session
            self._sessions[old.workload_name] = new
            if is_main:
                self._main_session = new
        old.stop(remove=True)
        if not is_main:
            # Directory::drop of the old instance (the main directory is the user's).
            with contextlib.suppress(OSError):
                old.directory.rmdir()
        log.info("[%s] new control-interface instance, waiting for Hello", old.workload_name)

    def send_frame(self, message: Any) -> None:
        self.session().send_frame(message)

    # -- sessions ----------------------------------------------------------------------

    def _make_session(
        self, directory: Path, name: str, authorizer: Any, hold_until_hello: bool = False
    ) -> Session:
        return Session(
            directory,
            name,
            authorizer,
            handler=self,
            faults=self.faults,
            record=self._record,
            reaccept_on_reconnect=self._reaccept,
            pace_frames=self._pace_frames,
            hold_until_hello=hold_until_hello,
        )

    def _new_session(self, directory: Path, name: str, authorizer: Any) -> Session:
        session = self._make_session(directory, name, authorizer)
        session.start()
        with self._lock:
            self._sessions[name] = session
        log.info("control interface of %s: %s", name, directory)
        return session

    def _record(self, message: Any) -> None:
        with self._changed:
            self._requests.append(message)
            self._changed.notify_all()

    def session_reset(self, session: Session) -> None:
        with self._lock:
            for key in [k for k in self._subscriptions if k[0] is session]:
                del self._subscriptions[key]
            campaigns = [c for k, c in self._campaigns.items() if k[0] is session]
            for key in [k for k in self._campaigns if k[0] is session]:
                del self._campaigns[key]
        for campaign in campaigns:
            campaign.cancel()

    def _ci_dir_for(self, workload: RenderedWorkload) -> Path | None:
        if self._run_dir is None or not workload.control_interface_access.get("allowRules"):
            return None
        return self._run_dir / workload.name / CONTROL_INTERFACE_SUBDIR

    def _ensure_session(self, workload: RenderedWorkload) -> Path | None:
        directory = self._ci_dir_for(workload)
        if directory is None or not self._started:
            return None
        authorizer = Authorizer.from_tree(workload.control_interface_access)
        with self._lock:
            existing = self._sessions.get(workload.name)
        if existing is not None:
            if existing.authorizer_source == workload.control_interface_access:
                return directory
            # Ankaios replaces the control-interface task when the access rules change.
            with self._lock:
                self._sessions.pop(workload.name, None)
            existing.stop(remove=False)
        session = self._new_session(directory, workload.name, authorizer)
        session.authorizer_source = copy.deepcopy(workload.control_interface_access)
        return directory

    def _drop_session(self, workload_name: str) -> None:
        if self._ci_path is not None and workload_name == self._workload_name:
            return
        with self._lock:
            session = self._sessions.pop(workload_name, None)
        if session is not None:
            session.stop(remove=True)
            self.session_reset(session)

    # -- request handling (the server) -------------------------------------------------

    def handle_request(self, session: Session, request: Any) -> None:
        with self._lock:
            agent = self._agent_of_workload(session.workload_name)
            if self._server_down or agent not in self._agents:
                # Waits in the agent's channel to the server until it is connected again.
                self._queued_requests.append((agent, session.workload_name, request))
                return
        kind = request.WhichOneof("RequestContent")
        rid = request.requestId
        if kind == "completeStateRequest":
            self._on_complete_state(session, rid, request.completeStateRequest)
        elif kind == "updateStateRequest":
            self._on_update(session, rid, request.updateStateRequest)
        elif kind == "logsRequest":
            self._on_logs(session, rid, request.logsRequest)
        elif kind == "logsCancelRequest":
            self._on_logs_cancel(session, rid)
        elif kind == "eventsCancelRequest":
            with self._lock:
                self._subscriptions.pop((session, rid), None)
            session.send_response(
                ank_base.Response(
                    requestId=rid, eventsCancelAccepted=ank_base.EventsCancelAccepted()
                )
            )
        else:
            session.send_response(
                ank_base.Response(requestId=rid, error=ank_base.Error(message=NO_CONTENT))
            )

    def _state_response(self, rid: str, tree: Mapping[str, Any], altered: Any = None) -> Any:
        response = ank_base.CompleteStateResponse(completeState=tree_to_proto(tree))
        if altered is not None:
            response.alteredFields.CopyFrom(altered)
        return ank_base.Response(requestId=rid, completeStateResponse=response)

    def _on_complete_state(self, session: Session, rid: str, request: Any) -> None:
        masks = list(request.fieldMask)
        with self._lock:
            try:
                tree = filter_tree(self._tree(), masks) if masks else self._tree()
            except Exception:
                # Ankaios answers filtering problems with an empty state, not an error.
                log.exception("filtering failed")
                tree = {}
            # Subscribe under the lock so no change slips between answer and subscription.
            session.send_response(self._state_response(rid, tree))
            if request.subscribeForEvents:
                self._subscriptions[(session, rid)] = masks

    def _on_update(self, session: Session, rid: str, request: Any) -> None:
        new_state = request.newState if request.HasField("newState") else None
        with self._lock:
            try:
                with self._mutation():
                    outcome = self._desired.update(new_state, list(request.updateMask))
                    for agent, tags in outcome.agent_tags.items():
                        if agent in self._agents:
                            self._agents[agent]["tags"] = dict(tags)
                    changes_workloads = bool(outcome.added or outcome.deleted)
                    if not changes_workloads:
                        # Ankaios answers an update that changes no workload (e.g. only a
                        # config) first and sends its events afterwards; with workload
                        # changes the events come first (handle_post_update_steps).
                        session.send_response(_update_success(rid, outcome))
                    self._set_initial_states(outcome.added)
                    self._forget_unstarted(outcome.deleted)
            except UpdateError as exc:
                session.send_response(
                    ank_base.Response(requestId=rid, error=ank_base.Error(message=str(exc)))
                )
                return
            if not changes_workloads:
                return
            # server_state.update: the added workloads' delete conditions go into the
            # graph first, then every deleted instance takes its workload's conditions.
            self._delete_graph.insert(outcome.added)
            mine_deleted = [
                _PendingDelete(w, self._delete_graph.conditions_for(w.name))
                for w in outcome.deleted
                if w.agent in self._agents
            ]
            mine_added = [w for w in outcome.added if w.agent in self._agents]
            self._cancel_campaigns_of(outcome.deleted)
            session.send_response(_update_success(rid, outcome))
        self._agent_update(mine_added, mine_deleted)

    def _on_logs(self, session: Session, rid: str, request: Any) -> None:
        with self._lock:
            current = {w.instance_name for w in self._desired.rendered().values()}
            accepted = [
                n
                for n in request.workloadNames
                if f"{n.workloadName}.{n.id}.{n.agentName}" in current
            ]
            sources = []
            runtime = self._runtime
            for name in accepted:
                key = f"{name.workloadName}.{name.id}.{name.agentName}"
                buffer = runtime.logs(key) if runtime is not None else None
                if name.agentName in self._agents and buffer is not None:
                    sources.append((name, buffer))
            session.send_response(
                ank_base.Response(
                    requestId=rid,
                    logsRequestAccepted=ank_base.LogsRequestAccepted(workloadNames=accepted),
                )
            )
            if not sources:
                return
            campaign = LogCampaign(
                rid,
                sources,
                LogOptions.from_request(request),
                session.send_response,
                lambda c: self._campaign_finished(session, c),
            )
            self._campaigns[(session, rid)] = campaign
        campaign.start()

    def _campaign_finished(self, session: Session, campaign: LogCampaign) -> None:
        with self._lock:
            if self._campaigns.get((session, campaign.request_id)) is campaign:
                del self._campaigns[(session, campaign.request_id)]

    def _on_logs_cancel(self, session: Session, rid: str) -> None:
        with self._lock:
            campaign = self._campaigns.pop((session, rid), None)
        if campaign is not None:
            campaign.cancel()
        session.send_response(
            ank_base.Response(requestId=rid, logsCancelAccepted=ank_base.LogsCancelAccepted())
        )

    def _cancel_campaigns_of(self, deleted: Sequence[RenderedWorkload]) -> None:
        """Log campaigns requested by a deleted workload end with it (server behaviour)."""
        names = {w.name for w in deleted}
        for key in [k for k in self._campaigns if k[0].workload_name in names]:
            self._campaigns.pop(key).cancel()

    # -- state bookkeeping -------------------------------------------------------------

    def _tree(self) -> dict[str, Any]:
        return {
            "desiredState": self._desired.to_tree(),
            "workloadStates": copy.deepcopy(self._states),
            "agents": copy.deepcopy(self._agents),
        }

    @contextmanager
    def _mutation(self, agents: bool = False) -> Iterator[None]:
        """Wrap a change: events go out for whatever it altered, waiters wake up.

        ``agents``: compare the agents map too, as the server does for AgentHello and
        AgentGone (not for updates, whose agent tags produce no events).
        """
        with self._changed:
            before = self._event_tree(agents) if self._subscriptions else None
            yield
            if before is not None:
                self._send_events(before, self._event_tree(agents))
            self._changed.notify_all()

    def _event_tree(self, agents: bool = False) -> dict[str, Any]:
        tree = {
            "desiredState": self._desired.to_tree(),
            "workloadStates": copy.deepcopy(self._states),
        }
        if agents:
            tree["agents"] = copy.deepcopy(self._agents)
        return tree

    def _send_events(self, before: Mapping[str, Any], after: Mapping[str, Any]) -> None:
        difference = diff(before, after)
        if difference.is_empty():
            return
        tree = self._tree()
        for (session, rid), masks in list(self._subscriptions.items()):
            fields = altered_fields(difference, masks)
            if fields.is_empty():
                continue
            altered = ank_base.AlteredFields(
                addedFields=fields.added, updatedFields=fields.updated, removedFields=fields.removed
            )
            session.send_response(
                self._state_response(rid, filter_tree(tree, fields.masks()), altered)
            )

    def _set_initial_states(self, added: Sequence[RenderedWorkload]) -> None:
        for workload in added:
            initial = NOT_SCHEDULED if not workload.agent else PENDING_INITIAL
            per_id = self._states.setdefault(workload.agent, {}).setdefault(workload.name, {})
            per_id.setdefault(workload.instance_id, initial.to_tree())

    def _forget_unstarted(self, deleted: Sequence[RenderedWorkload]) -> None:
        """Deleted instances no agent will ever stop disappear at once (server behaviour)."""
        for workload in deleted:
            state = self._state_of(workload)
            unscheduled = not workload.agent
            never_started = (
                workload.agent not in self._agents
                and state is not None
                and (state.get("state"), state.get("subState")) == ("Pending", "Initial")
            )
            if unscheduled or never_started:
                self._remove_state(workload)

    def _state_of(self, workload: RenderedWorkload) -> dict[str, Any] | None:
        return self._states.get(workload.agent, {}).get(workload.name, {}).get(workload.instance_id)

    def _remove_state(self, workload: RenderedWorkload) -> None:
        per_agent = self._states.get(workload.agent)
        if per_agent is None:
            return
        per_id = per_agent.get(workload.name)
        if per_id is None:
            return
        per_id.pop(workload.instance_id, None)
        if not per_id:
            del per_agent[workload.name]
        if not per_agent:
            del self._states[workload.agent]

    def _write_state(self, workload: RenderedWorkload, state: ExecState) -> None:
        if state == REMOVED:
            self._remove_state(workload)
            return
        current = self._state_of(workload)
        if (
            current is not None
            and current.get("state") == "Stopping"
            and current.get("subState") in _STICKY_STOPPING
            and state.state in ("Running", "Succeeded", "Failed")
        ):
            return
        self._states.setdefault(workload.agent, {}).setdefault(workload.name, {})[
            workload.instance_id
        ] = state.to_tree()

    def _on_runtime_state(self, workload: RenderedWorkload, state: ExecState) -> None:
        log.info("state of %s: %s", workload.instance_name, state)
        with self._lock:
            if not self._started:
                return
            tracked = (
                workload.instance_name in self._active or workload.instance_name in self._stopping
            )
            if not tracked:
                return
            if state.state == "Pending" and state.sub_state == "Starting":
                self._starts[workload.name] = self._starts.get(workload.name, 0) + 1
            if state == REMOVED:
                self._local_states.pop(workload.instance_name, None)
            else:
                self._local_states[workload.instance_name] = state
            # A disconnected agent's reports do not reach the server; on reconnection the
            # ServerHello matches what it runs then.
            if workload.agent in self._agents or self._server_down:
                with self._mutation():
                    self._write_state(workload, state)
            if state == REMOVED:
                self._stopping.pop(workload.instance_name, None)
                self._active.pop(workload.instance_name, None)
                self._drop_subscriptions_of(workload)
                self._delete_graph.removed(workload.name)
                self._release_replacement(workload)
        if state == REMOVED:
            self._after_removal(workload)
        # Every state the agent stores may fulfil queued add or delete conditions.
        self._run_ready()

    def _release_replacement(self, workload: RenderedWorkload) -> None:
        replacement = self._replacements.pop(workload.instance_name, None)
        if replacement is not None:
            self._waiting[replacement.instance_name] = replacement

    def _drop_subscriptions_of(self, workload: RenderedWorkload) -> None:
        for key in [k for k in self._subscriptions if k[0].workload_name == workload.name]:
            del self._subscriptions[key]

    def _after_removal(self, workload: RenderedWorkload) -> None:
        with self._lock:
            still_wanted = workload.name in self._desired.rendered()
        if not still_wanted:
            self._drop_session(workload.name)

    # -- the agent ---------------------------------------------------------------------

    def _agent_update(
        self, added: Sequence[RenderedWorkload], deleted: Sequence[_PendingDelete]
    ) -> None:
        """The agent receives added and deleted instances (``handle_update_workload``).

        Deletions whose delete conditions do not hold yet are reported
        ``Stopping(WaitingToStop)`` and queued; the new instance of an updated workload
        waits behind its old one (delete, then add). All conditions of one update are
        checked against the states from before any of its operations ran, as the agent's
        scheduler checks a whole batch against one state store
        (``agent/src/workload_scheduler/scheduler.rs``).
        """
        with self._lock:
            if not self._started:
                return
            for pending in deleted:
                if not self._delete_conditions_met(pending.conditions):
                    with self._mutation():
                        self._write_state(pending.workload, STOPPING_WAITING_TO_STOP)
            for pending in deleted:
                self._pending_deletes[pending.workload.instance_name] = pending
            for workload in added:
                self._waiting[workload.instance_name] = workload
        self._run_ready()

    def _run_ready(self) -> None:
        """Run every queued deletion and start whose conditions hold now.

        Repeats until nothing more is ready: a deletion writes ``Stopping`` at once, which
        may fulfil the delete conditions of another one (chains of dependencies).
        """
        while True:
            with self._lock:
                if not self._started:
                    return
                deletions = self._release_deletions()
                starts = self._ready_starts(deletions)
            if not deletions and not starts:
                return
            for workload in deletions:
                self._stop_instance(workload)
            for workload in starts:
                self._launch(workload)

    def _release_deletions(self) -> list[RenderedWorkload]:
        ready = [
            p.workload
            for p in self._pending_deletes.values()
            if self._delete_conditions_met(p.conditions)
        ]
        for workload in ready:
            del self._pending_deletes[workload.instance_name]
        return ready

    def _ready_starts(self, deleting: Sequence[RenderedWorkload]) -> list[RenderedWorkload]:
        """Waiting instances to start now; ``WaitingToStart`` for those whose add
        conditions do not hold."""
        deleting_names = {w.instance_name for w in deleting}
        # An update waits as a whole while its old instance's deletion is held back:
        # the new instance stays Pending(Initial) (UpdateDelete entries in the scheduler).
        held_back = {p.workload.name for p in self._pending_deletes.values()}
        # At most one instance per workload: the old one must be gone first. (A released
        # deletion stays in _active until _stop_instance runs, perhaps in another thread.)
        busy = {w.name for w in (*self._active.values(), *self._stopping.values(), *deleting)}
        ready: list[RenderedWorkload] = []
        for name, workload in list(self._waiting.items()):
            if name in deleting_names or name in self._pending_deletes:
                continue
            if workload.name in held_back:
                continue
            if not self._dependencies_met(workload):
                state = self._state_of(workload)
                if state is not None and state.get("subState") != "WaitingToStart":
                    with self._mutation():
                        self._write_state(workload, PENDING_WAITING_TO_START)
                continue
            if workload.name in busy:
                continue
            del self._waiting[name]
            self._active[name] = workload
            ready.append(workload)
        return ready

    def _agent_states(self, workload_name: str) -> list[StateTree]:
        """The states of ``workload_name``'s instances as our agent knows them.

        The server's ``Pending(Initial)`` of a new instance never reaches the agent (it
        learns states from its own reports and from other agents); only the ones present
        when it said hello were sent to it.
        """
        known: list[StateTree] = []
        for agent, per_agent in self._states.items():
            for iid, state in per_agent.get(workload_name, {}).items():
                initial = (state.get("state"), state.get("subState")) == ("Pending", "Initial")
                if initial and f"{workload_name}.{iid}.{agent}" not in self._known_at_hello:
                    continue
                known.append(state)
        return known

    def _dependencies_met(self, workload: RenderedWorkload) -> bool:
        return all(
            add_condition_met(str(condition), self._agent_states(dependency))
            for dependency, condition in workload.dependencies.items()
        )

    def _delete_conditions_met(self, conditions: Mapping[str, str]) -> bool:
        return all(
            delete_condition_met(condition, self._agent_states(dependent))
            for dependent, condition in conditions.items()
        )

    def _is_external(self, workload: RenderedWorkload) -> bool:
        """The client under test: it runs outside, only its states are simulated."""
        return self._ci_path is not None and workload.name == self._workload_name

    def _runtime_for(self, workload: RenderedWorkload) -> Runtime:
        """The connector the agent picks by the workload's ``runtime`` name."""
        runtime: Runtime | None
        if not is_supported(workload.runtime):
            runtime = self._unsupported
        elif self._is_external(workload):
            runtime = self._external
        else:
            runtime = self._runtime
        assert runtime is not None
        return runtime

    def _launch(self, workload: RenderedWorkload) -> None:
        # Ankaios sets up the control interface before the runtime connector runs, so a
        # workload with an unknown runtime still gets its FIFOs.
        external = self._is_external(workload)
        if external:
            self._follow_served_access(workload)
        directory = self._ci_path if external else self._ensure_session(workload)
        self._runtime_for(workload).start(workload, directory)

    def _follow_served_access(self, workload: RenderedWorkload) -> None:
        """New rules for the served workload (an update) take effect, unless overridden.

        Ankaios gives the new instance a new control-interface task with them; the client
        under test runs on, so only its authorizer is exchanged.
        """
        session = self._main_session
        if self._access_override is not None or session is None:
            return
        access = workload.control_interface_access
        if session.authorizer_source != access and access.get("allowRules"):
            session.authorizer = Authorizer.from_tree(access)
            session.authorizer_source = copy.deepcopy(access)
            log.info("[%s] access rules of the new instance apply", workload.name)

    def _stop_instance(self, workload: RenderedWorkload) -> None:
        with self._lock:
            waiting = self._waiting.pop(workload.instance_name, None)
            active = self._active.pop(workload.instance_name, None)
            if waiting is not None or active is None:
                # Never started: the agent reports it Removed at once.
                with self._mutation():
                    self._remove_state(workload)
                self._delete_graph.removed(workload.name)
                self._release_replacement(workload)
                removed_now = True
            else:
                self._stopping[workload.instance_name] = workload
                with self._mutation():
                    self._write_state(workload, STOPPING_REQUESTED)
                removed_now = False
        if removed_now:
            self._after_removal(workload)
            return
        self._runtime_for(workload).stop(workload)


def _update_success(rid: str, outcome: UpdateOutcome) -> Any:
    return ank_base.Response(
        requestId=rid,
        UpdateStateSuccess=ank_base.UpdateStateSuccess(
            addedWorkloads=[w.instance_name for w in outcome.added],
            deletedWorkloads=[w.instance_name for w in outcome.deleted],
        ),
    )


def _free_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0
