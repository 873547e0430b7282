"""The monitor's arguments: checked in ``__init__`` with a one-line ConfigError; settings() rebuilds them."""

from __future__ import annotations

import inspect
import json

import pytest
import torch

from weightscope.callbacks import WeightMonitor
from weightscope.errors import ConfigError
from weightscope.monitor.alerts import DEFAULT_RULES
from weightscope.monitor.config import MonitorConfig, parse_sink


def config_error(**kwargs) -> str:
    """The message WeightMonitor(**kwargs) fails with in __init__ (checked to be one line)."""
    with pytest.raises(ConfigError) as exc:
        WeightMonitor(**kwargs)
    message = str(exc.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("alerts, stop_on", [
    (["drift_spike"], ["nan"]),
    (False, "nan"),
    ({"nan": False}, "nan"),
    ({"nan": None}, ["nan"]),
    ([], ("nan",)),
])
def test_stop_on_a_rule_switched_off_by_alerts_fails(alerts, stop_on):
    message = config_error(every_n_steps=1, alerts=alerts, stop_on=stop_on)
    assert message.startswith("stop_on names 'nan', switched off by alerts=")


def test_stop_on_names_every_switched_off_rule_and_still_reports_unknown_ones_first():
    message = config_error(alerts=["drift_spike"], stop_on=["nan", "outliers", "drift_spike"])
    assert "'nan', 'outliers'" in message and "'drift_spike'" not in message and "them" in message
    assert "unknown rules ['boom']" in config_error(alerts=False, stop_on=["nan", "boom"])
    assert "stop_on must be a rule name or a list" in config_error(stop_on=3)
    assert "stop_on must be a rule name or a list" in config_error(stop_on=["nan", 3])


def test_stop_on_a_rule_that_is_on_is_accepted():
    for alerts in (None, True, ["nan"], {"nan": {"level": "WARN"}}, {"drift_spike": False}):
        assert WeightMonitor(alerts=alerts, stop_on="nan").config.stop_on == frozenset({"nan"})
    assert WeightMonitor(alerts=False).config.stop_on == frozenset()
    assert WeightMonitor(stop_on=None).config.stop_on == frozenset()


@pytest.mark.parametrize("value", ["sometimes", 0, -2, 1.5, True, None])
def test_full_scan_every_message_names_auto(value):
    assert config_error(full_scan_every=value) == f"full_scan_every must be 'auto' or an integer >= 1, got {value!r}"


def test_full_scan_every_accepts_auto_and_positive_integers():
    assert WeightMonitor(full_scan_every="auto").config.full_scan_every == "auto"
    assert WeightMonitor(full_scan_every=3).config.full_scan_every == 3


def test_sink_messages_show_the_forms_that_work():
    message = config_error(sinks=["mlflow"])
    assert message == ("unknown sink 'mlflow'; use 'tensorboard[:DIR]', 'wandb' or 'jsonl[:PATH]', "
                       "or an object with write(record)")
    assert "wandb[" not in message
    assert config_error(sinks=["wandb:my-project"]).startswith(
        "the wandb sink takes no argument, got 'wandb:my-project': use 'wandb'")
    assert "or an object with write(record); got 3" in config_error(sinks=[3])
    assert parse_sink("wandb") == ("wandb", None)
    assert parse_sink("tensorboard:runs/x") == ("tensorboard", "runs/x")
    assert parse_sink("jsonl") == ("jsonl", None)


@pytest.mark.parametrize("kwargs, match", [
    ({"priority": "high"}, "priority must be one of 'idle', 'low', 'normal', got 'high'"),
    ({"analysis_threads": 0}, "analysis_threads must be an integer >= 1, got 0"),
    ({"analysis_threads": True}, "analysis_threads must be an integer >= 1, got True"),
])
def test_config_checks_priority_and_analysis_threads(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        MonitorConfig.build(**kwargs)
    assert match in config_error(**kwargs)


class ObjectSink:
    def write(self, record):
        pass


#: Every build() argument set away from its default (on_alert aside: a function is not JSON).
NON_DEFAULT = dict(
    every_n_steps=7,
    methods=["spectral", "sparsity"],
    layers=r"^net\.",
    exclude="head",
    alerts={"nan": {"level": "WARN"}, "condition_number": {"max": 1e5, "growth": 4.0},
            "drift_spike": {"k": 3.0, "min_history": 2, "window": 8, "min_drift": 1e-4},
            "norm_ratio": False, "outliers": {"thresholds": [0.5, 2.0, 9.0]}, "dead_units": {"level": "ERROR"},
            "frozen_changed": {"tolerance": 0.01}},
    log_histograms=True,
    background=False,
    max_pending=3,
    device="cuda" if torch.cuda.is_available() else "cpu",  # the only device a CPU-only machine has
    num_workers=2,
    distributed="split",
    stop_on=["nan", "frozen_changed"],
    full_scan_every=4,
    analysis_budget=0.2,
    alert_window=5,
    histogram_bins=32,
    save_baseline=False,
    analysis_threads=2,
    priority="idle",
    sinks=["jsonl:x/h.jsonl", "tensorboard", "wandb"],
)


def test_settings_rebuild_every_argument():
    build_args = set(inspect.signature(MonitorConfig.build).parameters) - {"on_alert"}
    assert set(NON_DEFAULT) == build_args  # this test sets every argument there is
    defaults = MonitorConfig.build().settings()
    config = MonitorConfig.build(**NON_DEFAULT)
    settings = config.settings()
    assert set(settings) == build_args
    same = [k for k in build_args if settings[k] == defaults[k]]
    assert same == ([] if torch.cuda.is_available() else ["device"])  # each one really non-default
    rebuilt = MonitorConfig.build(**json.loads(json.dumps(settings)))
    assert rebuilt.settings() == settings
    assert rebuilt == config
    assert settings["methods"] == ["basic_stats", "spectral", "sparsity"]
    assert settings["priority"] == "idle" and settings["analysis_threads"] == 2
    assert settings["sinks"] == ["jsonl:x/h.jsonl", "tensorboard", "wandb"]
    assert settings["stop_on"] == ["frozen_changed", "nan"]
    assert settings["alerts"]["norm_ratio"] is False
    assert settings["alerts"]["outliers"] == {"level": "WARN", "thresholds": [0.5, 2.0, 9.0]}
    assert rebuilt.device == config.device and set(DEFAULT_RULES) - {r.name for r in rebuilt.rules} == {
        "norm_ratio"}


def test_settings_keep_sink_strings_and_leave_out_what_json_cannot_hold():
    config = MonitorConfig.build(sinks=["wandb", ObjectSink()], on_alert=print)
    assert config.settings()["sinks"] == ["wandb"]
    assert "on_alert" not in config.settings()
    assert MonitorConfig.build(sinks="jsonl:a.jsonl").settings()["sinks"] == ["jsonl:a.jsonl"]


def test_every_json_able_monitor_argument_has_a_setting():
    # WeightMonitor's own arguments outside the config: output_dir (the HF callback exports its own).
    monitor_args = set(inspect.signature(WeightMonitor.__init__).parameters) - {"self", "output_dir", "on_alert"}
    assert monitor_args == set(MonitorConfig.build().settings())


def test_monitor_settings_carry_priority_threads_and_sinks():
    settings = WeightMonitor(priority="idle", analysis_threads=2, sinks=["wandb"]).config.settings()
    assert (settings["priority"], settings["analysis_threads"], settings["sinks"]) == ("idle", 2, ["wandb"])
