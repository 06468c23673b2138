"""tandem: train DeepSeek-V3-shaped mixture-of-experts models from Python.

    import tandem
    trainer = tandem.Trainer("examples/configs/tiny.toml", overrides={"train.steps": 50})
    summary = trainer.run(on_step=lambda s: print(s["step"], s["loss"]))

The configuration keys, their parsing and their errors are tandem-train's (docs/configuration.md);
under mpirun, srun or torchrun each Python process is one rank, as tandem-train is.
docs/embedding.md walks through it.
"""

import json
import numbers
import os
import time

import numpy as np

from . import _tandem

__version__ = _tandem.version()
__all__ = ["Trainer", "ControlReply", "load_checkpoint", "Error", "UsageError", "__version__"]

Error = _tandem.Error  # every failure tandem reports (a RuntimeError)
UsageError = _tandem.UsageError  # what the user gave is wrong: configuration, files, arguments


def _toml_value(key, value):
    """A Python value as --set takes it."""
    if isinstance(value, (bool, np.bool_)):  # before int: True is an int in Python
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):  # int and numpy's integers
        return str(int(value))
    if isinstance(value, numbers.Real):  # float, numpy's floats, Fraction
        return repr(float(value))
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    raise TypeError(
        f"config key {key}: {type(value).__name__} value {value!r}; give an int, float, bool or str"
    )


def _path(what, value):
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{what} is a path (str or os.PathLike), not {type(value).__name__}")
    return os.fspath(value)


def _flatten(mapping, prefix=""):
    """{"train": {"steps": 3}} and {"train.steps": 3} both give ("train.steps", 3)."""
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise TypeError(f"config keys are strings, got {key!r}")
        name = prefix + key
        if isinstance(value, dict):
            yield from _flatten(value, name + ".")
        else:
            yield name, value


def _config(config, overrides):
    if isinstance(config, dict):
        result = _tandem.RunConfig()
        pairs = list(_flatten(config))
    elif isinstance(config, os.PathLike) or (
        isinstance(config, str) and "\n" not in config
        and (os.path.exists(config) or "=" not in config)
    ):
        result = _tandem.RunConfig.from_file(os.fspath(config))
        pairs = []
    elif isinstance(config, str):
        result = _tandem.RunConfig.from_toml(config, "<config text>")
        pairs = []
    else:
        raise TypeError(
            "config is a path to a TOML file, TOML text or a dict of keys, "
            f"not {type(config).__name__}"
        )
    if overrides is not None and not isinstance(overrides, dict):
        raise TypeError(
            "overrides is a dict of keys ({'train.steps': 3}), not " + type(overrides).__name__)
    pairs += list(_flatten(overrides or {}))
    for key, value in pairs:
        result.set(key, _toml_value(key, value))
    result.validate()
    return result


class Trainer:
    """One training run in this process.

    config: a path to a TOML file, TOML text, or a dict ({"train": {"steps": 3}} or
        {"train.steps": 3}); overrides: more keys on top, as tandem-train's --set.
    data: optional callable (split, step, sequence) -> 1-D numpy array of any integer dtype with
        model.seq_len + 1 tokens ("train" or "held_out"; a pure function of its arguments, so
        runs are reproducible and resumable); without it, data.path's files are read.
    resume, summary_json, log_jsonl, trace: tandem-train's --resume, --summary-json, --log-jsonl
        and --trace.
    """

    def __init__(self, config, overrides=None, data=None, *, resume="", summary_json="",
                 log_jsonl="", trace="", label="python"):
        self._config = _config(config, overrides)
        self._run = _tandem.Run(self._config, resume=_path("resume", resume),
                                summary_json=_path("summary_json", summary_json),
                                log_jsonl=_path("log_jsonl", log_jsonl),
                                trace=_path("trace", trace), label=str(label))
        if data is not None:
            if not callable(data):
                raise TypeError(f"data is a callable (split, step, sequence), not {type(data).__name__}")
            self._run.set_data(data)

    def config(self, key):
        """A key's effective value: 64, "corpus.txt", True, 0.002."""
        return json.loads(self._config.get(key))

    @property
    def rank(self):
        return self._run.rank

    @property
    def world_size(self):
        return self._run.world_size

    def run(self, on_step=None, on_evaluation=None):
        """Trains to train.steps (or until stopped) and returns the summary as a dict.

        on_step(dict) is called after every step (step, loss, learning_rate, grad_norm, tokens,
        seconds and this rank's compute and wait seconds) and on_evaluation(dict) after every
        held-out evaluation, on every rank. An exception raised in either stops the run at the
        next step boundary (after a checkpoint when checkpoint.dir is set) and is re-raised here.
        """
        summary = self._run.run(on_step, on_evaluation)
        text = summary.pop("json")
        summary["record"] = json.loads(text) if text else None
        return summary

    # Steering, with the control service's semantics: applied by every rank at the same step
    # boundary; rank 0 takes them. Each returns a ControlReply (never wait() for it in a callback,
    # which holds the boundary up).
    def pause(self):
        return ControlReply(self._run.pause())

    def resume(self):
        return ControlReply(self._run.resume())

    def checkpoint(self):
        return ControlReply(self._run.checkpoint())

    def set_learning_rate(self, learning_rate):
        return ControlReply(self._run.set_learning_rate(float(learning_rate)))

    def stop(self):
        return ControlReply(self._run.stop())


class ControlReply:
    """The answer to a steering command, once every rank applied it at a step boundary."""

    def __init__(self, reply):
        self._reply = reply

    def ready(self):
        return self._reply.ready()

    def wait(self, timeout=None):
        """{"ok", "step", "path", "message", "previous_learning_rate"}; None after `timeout`
        seconds without an answer. Interruptible (Ctrl-C)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            result = self._reply.poll()  # refused on the training thread (a callback)
            if result is not None:
                return result
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(0.01)


def load_checkpoint(path):
    """Every parameter of checkpoint `path` (a step-NNNNNNNN directory) by global name, as fp32
    numpy arrays; the checkpoint is verified first."""
    return _tandem.load_parameters(os.fspath(path))
