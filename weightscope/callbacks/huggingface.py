"""Hugging Face ``Trainer`` adapter: translates ``TrainerCallback`` events for :class:`WeightMonitor`."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from . import _check_monitor_kwargs, _raise_if_missing

try:
    from transformers import TrainerCallback
except ImportError as exc:
    _raise_if_missing(exc, "transformers", "hf", "WeightScopeTrainerCallback")
    raise

from ..monitor import WeightMonitor
from ..sinks import wandb as wandb_sink
from ..sinks.tensorboard import TensorBoardSink

try:  # transformers >= 4.41: callback state travels in trainer_state.json
    from transformers.trainer_callback import ExportableState
except ImportError:  # pragma: no cover - older transformers
    ExportableState = object  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)

#: The step column HF's WandbCallback charts against.
HF_STEP_KEY = "train/global_step"
#: Written into each ``checkpoint-N`` folder, so resuming works without ``restore_callback_states_from_checkpoint``.
STATE_FILE = "weightscope_state.json"
#: HF rebuilds a callback from its exported JSON arguments on resume; this one finds the
#: arguments JSON cannot hold (``on_alert``) again, by token, in the same process.
TOKEN_ARG = "weightscope_token"
_NOT_JSON: dict[str, dict[str, Any]] = {}


def tensorboard_dir(args: Any, trainer_callbacks: Iterable[Any] = ()) -> Path:
    """The folder HF's own TensorBoard integration writes to (or would write to, were it on).

    In order: where the writer of HF's ``TensorBoardCallback`` among
    ``trainer_callbacks`` writes (once its ``on_train_begin`` has run: the
    folder it actually made); ``args.logging_dir`` (transformers 4.x);
    ``$TENSORBOARD_LOGGING_DIR``; with ``tensorboard`` in ``args.report_to``,
    the folder under ``output_dir/runs`` of the newest event file this process
    wrote (HF's writer made it a moment ago); else a new
    ``output_dir/runs/<date>_<host>`` (5.x's default). The last is stamped to
    the second, and HF's integration took its own stamp earlier: call this
    once per run, after HF's ``on_train_begin``.
    """
    for cb in trainer_callbacks:
        folder = _hf_writer_dir(cb)
        if folder is not None:
            return folder
    logging_dir = getattr(args, "logging_dir", None)
    if logging_dir:
        return Path(logging_dir)
    env = os.environ.get("TENSORBOARD_LOGGING_DIR")
    if env:
        return Path(env).expanduser()
    if _reports_to(args, "tensorboard"):
        folder = _newest_own_events_dir(Path(args.output_dir) / "runs")
        if folder is not None:
            return folder
    try:
        from transformers.integrations.integration_utils import default_logdir

        sub = default_logdir()
    except ImportError:  # moved or gone: same recipe as PyTorch's SummaryWriter
        sub = os.path.join("runs", datetime.now().strftime("%b%d_%H-%M-%S") + "_" + socket.gethostname())
    return Path(args.output_dir) / sub


def _hf_writer_dir(callback: Any) -> Path | None:
    """The folder of an HF ``TensorBoardCallback``'s writer (torch's or tensorboardX's ``SummaryWriter``)."""
    try:
        from transformers.integrations import TensorBoardCallback
    except ImportError:  # pragma: no cover - transformers without the integration
        return None
    if not isinstance(callback, TensorBoardCallback):
        return None
    writer = getattr(callback, "tb_writer", None)
    if writer is not None:
        get_logdir = getattr(writer, "get_logdir", None)
        folder = get_logdir() if callable(get_logdir) else getattr(writer, "log_dir", None)
        if folder:
            return Path(folder)
    folder = getattr(callback, "logging_dir", None)  # 5.x: chosen in on_train_begin, writer made on first log
    return Path(folder) if folder else None


def _newest_own_events_dir(runs: Path) -> Path | None:
    """The folder (``runs/*``) of the newest TensorBoard event file that this process wrote.

    Event file names carry their writer's creation time, host and pid:
    ``events.out.tfevents.<seconds>.<host>.<pid>.<n>``.
    """
    mark = f".{socket.gethostname()}.{os.getpid()}."
    best: tuple[int, int] | None = None
    found = None
    try:
        candidates = list(runs.glob("*/events.out.tfevents.*"))
    except OSError:
        return None
    for path in candidates:
        if mark not in path.name:
            continue
        try:
            key = (int(path.name.split(".")[3]), path.stat().st_mtime_ns)
        except (IndexError, ValueError, OSError):
            continue
        if best is None or key > best:
            best, found = key, path.parent
    return found


def _trainer_callbacks(depth: int = 8) -> list[Any]:
    """The callbacks of the ``Trainer`` whose ``CallbackHandler`` is calling us (found on the call stack):
    HF passes callbacks neither the trainer nor each other."""
    try:
        from transformers.trainer_callback import CallbackHandler
    except ImportError:  # pragma: no cover
        return []
    frame = sys._getframe(1)
    for _ in range(depth):
        if frame is None:
            break
        owner = frame.f_locals.get("self")
        if isinstance(owner, CallbackHandler):
            return list(getattr(owner, "callbacks", []))
        frame = frame.f_back
    return []


def _reports_to(args: Any, name: str) -> bool:
    report_to = getattr(args, "report_to", None) or []
    if isinstance(report_to, str):
        report_to = [report_to]
    if "all" in report_to:
        try:
            from transformers.integrations import get_available_reporting_integrations

            return name in get_available_reporting_integrations()
        except ImportError:
            return True
    return name in report_to


class ActiveWandbRunSink:
    """Logs to whatever ``wandb.run`` is active when a record arrives (the one HF's WandbCallback started)."""

    def __init__(self, *, histograms: bool = False) -> None:
        self.histograms = histograms
        self._warned = False

    def write(self, record: Any) -> None:
        import wandb

        if wandb.run is None:
            if not self._warned:
                log.warning("weightscope: report_to includes wandb but no wandb run is active; not logging to W&B")
                self._warned = True
            return
        wandb_sink.log_record(wandb.run, record, step_key=HF_STEP_KEY, histograms=self.histograms)


class WeightScopeTrainerCallback(TrainerCallback, ExportableState):
    r"""Weight health, drift and alerts for the Hugging Face ``Trainer``.

    Snapshots at train begin (the baseline), every ``every_n_steps`` optimizer
    steps and at train end; analysis runs in a background thread. Logs to the
    active ``wandb.run`` (``train/global_step`` in the row) when ``wandb`` is
    in ``args.report_to``, to TensorBoard in the folder HF's own TensorBoard
    integration uses (whether or not that integration is on), and always to
    ``output_dir/weightscope.jsonl``. ``stop_on`` sets
    ``control.should_training_stop``. Arguments are those of
    :class:`~weightscope.callbacks.WeightScopeCallback`, plus ``tensorboard``
    (False: no TensorBoard events).

    Resume: the state is saved into each ``checkpoint-N`` folder and read back
    when training resumes from it; with
    ``TrainingArguments(restore_callback_states_from_checkpoint=True)`` HF's own
    callback-state mechanism carries it too. That mechanism rebuilds the
    callback from its JSON-able arguments; ``on_alert``, a function, is found
    again through a token among them when the rebuild happens in the process
    that made the original callback (a fresh process needs it passed again).

    Example::

        >>> from transformers import Trainer, TrainingArguments
        >>> from weightscope.callbacks import WeightScopeTrainerCallback
        >>> args = TrainingArguments("out", max_steps=1000, report_to=["tensorboard"])  # doctest: +SKIP
        >>> trainer = Trainer(model, args, train_dataset=ds,  # doctest: +SKIP
        ...                   callbacks=[WeightScopeTrainerCallback(every_n_steps=100, stop_on=["nan"])])
        >>> trainer.train()  # doctest: +SKIP
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        methods: Any = None,
        *,
        layers: str | None = None,
        exclude: str | None = None,
        alerts: Any = None,
        log_histograms: bool = False,
        background: bool = True,
        max_pending: int = 1,
        device: Any = None,
        num_workers: int | None = None,
        on_alert: Any = None,
        stop_on: Any = (),
        distributed: str = "rank0",
        output_dir: str | Path | None = None,
        tensorboard: bool = True,
        **monitor_kwargs: Any,
    ) -> None:
        token = monitor_kwargs.pop(TOKEN_ARG, None)
        _check_monitor_kwargs(WeightScopeTrainerCallback, monitor_kwargs)
        if on_alert is None and token in _NOT_JSON:
            on_alert = _NOT_JSON[token]["on_alert"]
        self._token = token if isinstance(token, str) else uuid.uuid4().hex
        if on_alert is not None:
            _NOT_JSON[self._token] = {"on_alert": on_alert}
        self._kwargs = dict(
            every_n_steps=every_n_steps, methods=methods, layers=layers, exclude=exclude, alerts=alerts,
            log_histograms=log_histograms, background=background, max_pending=max_pending, device=device,
            num_workers=num_workers, on_alert=on_alert, stop_on=stop_on, distributed=distributed, **monitor_kwargs,
        )
        self._output_dir = output_dir
        self._tensorboard = bool(tensorboard)
        self.monitor = self._new_monitor()  # validates every argument now
        self.resume_state: dict[str, Any] | None = None
        #: Where this run's TensorBoard events go (set at train begin; None: no TensorBoard).
        self.tensorboard_log_dir: Path | None = None

    def _new_monitor(self) -> WeightMonitor:
        return WeightMonitor(**self._kwargs, output_dir=self._output_dir or "weightscope-logs")

    # -- HF callback state (ExportableState) ----------------------------------
    def state(self) -> dict[str, Any]:
        settings = self.monitor.config.settings()
        settings.update(output_dir=str(self._output_dir) if self._output_dir else None, tensorboard=self._tensorboard,
                        **{TOKEN_ARG: self._token})
        return {"args": settings, "attributes": {"resume_state": self.monitor.state_dict()}}

    # -- events ----------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.monitor.closed:  # a second train() with the same callback
            self.monitor = self._new_monitor()
        if self._output_dir is None:
            self.monitor.output_dir = Path(args.output_dir)
        # HF's callback-state restore sets resume_state; otherwise look in the checkpoint folder.
        resume, self.resume_state = self.resume_state or self._state_file(args, state.global_step), None
        if resume:
            self.monitor.load_state_dict(resume)
        if state.is_world_process_zero:
            histograms = self.monitor.config.log_histograms
            self.tensorboard_log_dir = None
            if self._tensorboard:
                try:
                    # HF's integration callbacks come before the user's: its writer has made its folder by now.
                    folder = tensorboard_dir(args, _trainer_callbacks())
                    self.monitor.add_sink(TensorBoardSink(folder, histograms=histograms))
                    self.tensorboard_log_dir = folder
                except Exception as exc:  # tensorboard not installed: the other sinks still work
                    log.warning("weightscope: no TensorBoard logging: %s", exc)
            if _reports_to(args, "wandb"):
                self.monitor.add_sink(ActiveWandbRunSink(histograms=histograms))
        self.monitor.start(model, state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        max_steps = getattr(state, "max_steps", 0) or 0
        self.monitor.step(model, state.global_step, last=0 < max_steps <= state.global_step)
        if self.monitor.should_stop:
            control.should_training_stop = True

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.monitor.close(model, state.global_step)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            try:
                (folder / STATE_FILE).write_text(json.dumps(self.monitor.state_dict()))
            except OSError as exc:
                log.warning("weightscope: could not save monitor state in %s: %s", folder, exc)

    @staticmethod
    def _state_file(args: Any, step: int) -> dict[str, Any] | None:
        if not step:
            return None
        path = Path(args.output_dir) / f"checkpoint-{step}" / STATE_FILE
        try:
            return json.loads(path.read_text()) if path.is_file() else None
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("weightscope: ignoring unreadable %s: %s", path, exc)
            return None
