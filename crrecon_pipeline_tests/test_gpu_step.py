"""The training step built for a GPU (train/step.py), checked on CPU: gradient accumulation equals one whole
batch, torch.compile on/off take the same steps, no host read inside the step, and a CUDA out-of-memory error is
one line naming the batch size and the largest micro-batch that fitted."""

import pytest
import torch
from torch.overrides import TorchFunctionMode

from crrecon_pipeline.data.prepared import load_prepared
from crrecon_pipeline.errors import ConfigError
from crrecon_pipeline.train import distributed, step
from crrecon_pipeline.train.run import setup_run
from crrecon_pipeline_tests.helpers import tiny_config

HOST_READS = {"item", "cpu", "__float__", "__int__", "__bool__", "tolist", "numpy"}


class HostReads(TorchFunctionMode):
    """Counts the tensor methods that copy a value to the host (and so wait for the device). The optimizer's step
    counters are left out: torch keeps them on the host on purpose (reading them waits for nothing)."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        super().__init__()
        self.host_counters = {id(s["step"]) for s in optimizer.state.values() if "step" in s}
        self.reads = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        tensor = args[0] if args and isinstance(args[0], torch.Tensor) else None
        # a copy to the host from another device (on CPU every tensor is already there)
        is_to_cpu = (name == "to" and tensor is not None and tensor.device.type != "cpu"
                     and any(str(a).startswith("cpu") for a in args[1:]))
        if (name in HOST_READS or is_to_cpu) and id(tensor) not in self.host_counters:
            self.reads.append(name)
        return func(*args, **(kwargs or {}))


def make_run(prepared_dir, tmp_path, *overrides):
    config = tiny_config("training.use_amp=false", *overrides)
    dev = torch.device("cpu")
    return setup_run(config, load_prepared(prepared_dir), tmp_path, dev, distributed.from_env(dev))


def weights_after_steps(run, steps: int = 2) -> dict:
    for k in range(steps):
        step.train_step(run, run.train_idx[k * run.batch_size:(k + 1) * run.batch_size])
    return {k: v.detach().clone() for k, v in run.model.state_dict().items()}


def test_two_half_batches_take_the_step_of_one_whole_batch(prepared_dir, tmp_path):
    whole = weights_after_steps(make_run(prepared_dir, tmp_path / "a"))
    halves = weights_after_steps(make_run(prepared_dir, tmp_path / "b", "training.accumulate=2"))
    start = make_run(prepared_dir, tmp_path / "c").model.state_dict()
    assert any(not torch.equal(start[k], whole[k]) for k in whole)  # the steps moved the weights
    for k in whole:
        torch.testing.assert_close(halves[k], whole[k], rtol=0, atol=1e-6, msg=k)


def test_compile_on_and_off_take_the_same_steps(prepared_dir, tmp_path):
    """torch.compile through dynamo + AOTAutograd (backend aot_eager: inductor's C++ build is minutes on 2 CPU
    cores); on a GPU benchmarks/gpu_check.py compares inductor itself."""
    plain = weights_after_steps(make_run(prepared_dir, tmp_path / "a"))
    run = make_run(prepared_dir, tmp_path / "b", "training.compile=true", "training.compile_backend=aot_eager")
    assert run.net is not run.model and hasattr(run.net, "_orig_mod")
    compiled = weights_after_steps(run)
    for k in plain:
        torch.testing.assert_close(compiled[k], plain[k], rtol=1e-5, atol=1e-6, msg=k)


def test_the_step_reads_nothing_back_to_the_host(prepared_dir, tmp_path):
    run = make_run(prepared_dir, tmp_path, "training.accumulate=2")
    idx = run.train_idx[:run.batch_size]
    step.train_step(run, idx)  # the optimizer's state (and its step counters) exists from the first step on
    with HostReads(run.optimizer) as counter:
        total = step.train_step(run, idx)
    assert counter.reads == []
    assert total.device.type == "cpu" and total.dim() == 0 and float(total) > 0
    with HostReads(run.optimizer) as counter:  # the counter sees a read when there is one
        float(step.train_step(run, idx))
    assert counter.reads == ["__float__"]


def test_out_of_memory_is_one_line_with_the_batch_that_fits(prepared_dir, tmp_path):
    run = make_run(prepared_dir, tmp_path)
    forward = run.net.forward

    def small_gpu(x):  # a GPU on which 8 rows fit
        if len(x) > 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(x)

    run.net.forward = small_gpu
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    with pytest.raises(ConfigError) as info:
        step.train_step(run, run.train_idx[:32])
    message = str(info.value)
    assert "\n" not in message
    assert "data.batch_size=32" in message and "largest that fitted was 8" in message
    assert "training.accumulate >= 4" in message
    assert all(torch.equal(before[k], v) for k, v in run.model.state_dict().items())  # the probe changed nothing
    assert all(p.grad is None for p in run.model.parameters())


def test_the_gpu_execution_keys_may_change_on_resume(prepared_dir, tmp_path):
    """A run started on a large GPU resumes on a smaller one with accumulation, or compiled (same trained model)."""
    from crrecon_pipeline.train.checkpoints import check_resumable, stored_config

    run = make_run(prepared_dir, tmp_path)
    state = run.state(1)
    stored = stored_config(state, tmp_path)
    changed = check_resumable(state, stored, tiny_config("training.use_amp=false", "training.accumulate=4",
                                                         "training.compile=true", "training.channels_last=false"),
                              tmp_path)
    assert set(changed) == {"training.accumulate", "training.compile", "training.channels_last"}
    with pytest.raises(ConfigError, match="training.lr"):
        check_resumable(state, stored, tiny_config("training.use_amp=false", "training.lr=0.1"), tmp_path)
