"""Lightning adapter: translates ``lightning.pytorch`` hooks and loggers for :class:`WeightMonitor`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import _check_monitor_kwargs, _raise_if_missing

try:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import Callback
except ImportError as exc:
    _raise_if_missing(exc, "lightning", "lightning", "WeightScopeCallback")
    raise

from ..monitor import WeightMonitor
from ..monitor.naming import wandb_keys
from ..sinks import tensorboard as tb_sink
from ..sinks import wandb as wandb_sink

#: The step column Lightning's WandbLogger writes and charts against.
LIGHTNING_STEP_KEY = "trainer/global_step"


class LightningLoggerSink:
    """One ``trainer.loggers`` entry as a sink.

    Scalars go through ``logger.log_metrics(metrics, step)`` for every logger
    (Lightning's WandbLogger puts ``trainer/global_step`` in the row itself).
    W&B loggers also get histograms and ``run.alert``; TensorBoard loggers get
    histograms and alert text through their ``SummaryWriter``.
    """

    def __init__(self, logger: Any, *, histograms: bool = False) -> None:
        from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

        self.logger = logger
        self.histograms = histograms
        self._is_wandb = isinstance(logger, WandbLogger)
        self._is_tb = isinstance(logger, TensorBoardLogger)

    def write(self, record: Any) -> None:
        scalars = record.scalars()
        self.logger.log_metrics(wandb_keys(scalars) if self._is_wandb else scalars, step=record.step)
        if self._is_wandb:
            wandb_sink.log_record(self.logger.experiment, record, step_key=LIGHTNING_STEP_KEY, scalars=False,
                                  histograms=self.histograms)
        elif self._is_tb:
            tb_sink.log_record(self.logger.experiment, record, scalars=False, histograms=self.histograms)

    def flush(self) -> None:
        self.logger.save()


class WeightScopeCallback(Callback):
    r"""Weight health, drift and alerts every ``every_n_steps`` optimizer steps, into every logger of the trainer.

    Snapshots at train start (the baseline), every ``every_n_steps`` optimizer
    steps (once per step under gradient accumulation) and at train end; the
    training loop waits only for the copy, the analysis runs in a background
    thread. Scalars go to every logger in ``trainer.loggers``; W&B and
    TensorBoard loggers also get histograms (``log_histograms=True``) and
    alerts. A JSONL history is always written to ``output_dir`` (default: the
    trainer's ``log_dir``). Its state (last snapshot step, drift medians,
    where the baseline is) travels in checkpoints.

    Args:
        every_n_steps: snapshot interval in optimizer steps.
        methods: analyzers run on each snapshot (default ``basic_stats``, ``spectral``, ``quantization``).
        layers / exclude: regexes on layer names.
        alerts: ``None`` (all rules, default thresholds), ``False``, a list of rule names, or
            ``{"rule": False | {"level": ..., <threshold>: value}}``; see ``docs/monitoring.md``.
        log_histograms: also log weight histograms.
        background: analyse in a background thread (False: in the training loop).
        max_pending: snapshots allowed to wait for analysis before further ones are skipped.
        device: where analysis runs (``"cpu"``, ``"cuda"``); default CPU.
        num_workers: scan workers for one snapshot (None: one beside training, every core while it waits).
        on_alert: function called with each :class:`~weightscope.monitor.Alert`.
        stop_on: rule names that stop training (``["nan"]``).
        distributed: ``"rank0"`` (default) or ``"split"`` (layers shared out across ranks).
        output_dir: where the JSONL history and the baseline weights go.
        \**monitor_kwargs: further :class:`WeightMonitor` settings (``full_scan_every``, ``alert_window``, ...).

    Example::

        >>> import lightning.pytorch as L
        >>> from lightning.pytorch.loggers import TensorBoardLogger
        >>> from weightscope.callbacks import WeightScopeCallback
        >>> weightscope = WeightScopeCallback(every_n_steps=100, stop_on=["nan"])
        >>> trainer = L.Trainer(callbacks=[weightscope], logger=TensorBoardLogger("runs"))  # doctest: +SKIP
        >>> trainer.fit(model)  # doctest: +SKIP
        >>> weightscope.monitor.alerts  # doctest: +SKIP
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
        **monitor_kwargs: Any,
    ) -> None:
        _check_monitor_kwargs(WeightScopeCallback, monitor_kwargs)
        self._kwargs = dict(
            every_n_steps=every_n_steps, methods=methods, layers=layers, exclude=exclude, alerts=alerts,
            log_histograms=log_histograms, background=background, max_pending=max_pending, device=device,
            num_workers=num_workers, on_alert=on_alert, stop_on=stop_on, distributed=distributed, **monitor_kwargs,
        )
        self._output_dir = output_dir
        self.monitor = self._new_monitor()  # validates every argument now
        self._seen_step: int | None = None

    def _new_monitor(self) -> WeightMonitor:
        return WeightMonitor(**self._kwargs, output_dir=self._output_dir or "weightscope-logs")

    @property
    def state_key(self) -> str:
        return self._generate_state_key(every_n_steps=self.monitor.config.every_n_steps)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor.closed:  # a second fit() with the same callback
            self.monitor = self._new_monitor()
        if self._output_dir is None:
            self.monitor.output_dir = Path(trainer.log_dir or trainer.default_root_dir)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                self.monitor.add_sink(LightningLoggerSink(logger, histograms=self.monitor.config.log_histograms))
        self._seen_step = trainer.global_step
        self.monitor.start(pl_module, trainer.global_step)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step != self._seen_step:  # an optimizer step happened (not every batch does under accumulation)
            self._seen_step = step
            self.monitor.step(pl_module, step, last=_is_last_step(trainer))
        if self.monitor.should_stop:
            trainer.should_stop = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.monitor.close(pl_module, trainer.global_step)
        if self.monitor.should_stop:
            trainer.should_stop = True

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.monitor.abort()

    def state_dict(self) -> dict[str, Any]:
        return self.monitor.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.monitor.closed:  # restoring into a callback that already ran a fit()
            self.monitor = self._new_monitor()
        self.monitor.load_state_dict(state_dict)


def _is_last_step(trainer: pl.Trainer) -> bool:
    """Whether the optimizer step just taken is the run's last one by its step or epoch limit.

    An early stop is not foreseen: then ``on_train_end`` takes the final snapshot.
    """
    try:
        if trainer.max_steps is not None and 0 <= trainer.max_steps <= trainer.global_step:
            return True
        max_epochs = trainer.max_epochs
        return (max_epochs is not None and 0 <= max_epochs <= trainer.current_epoch + 1
                and bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch))
    except Exception:  # a Lightning without these attributes: the final snapshot comes at train end
        return False
