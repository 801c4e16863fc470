"""One optimizer step, built for a GPU: the batch split into `training.accumulate` micro-batches whose gradients
add up to the whole batch's, channels-last inputs for the CNNs on CUDA, and no host synchronisation: the step
returns the batch's summed loss as a device tensor, which the epoch adds up and reads once (loop._run_epoch).
A CUDA out-of-memory error becomes one line naming the batch size and the largest micro-batch that fits.

Also the model wrappers the step runs through (torch.compile behind training.compile)."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from crrecon_pipeline.errors import ConfigError


def compiled(net: torch.nn.Module, training) -> torch.nn.Module:
    """torch.compile of the training net when training.compile is on (the plain module stays for checkpoints
    and evaluation: its state_dict keys do not change)."""
    if not training.compile:
        return net
    return torch.compile(net, backend=training.compile_backend)


def uses_channels_last(run) -> bool:
    """channels-last memory format for the CNNs' inputs (and weights, run.setup_run): on CUDA only, where the
    convolutions are faster in NHWC; on CPU it would only cost a copy."""
    return run.config.training.channels_last and run.dev.type == "cuda"


def batch(run, idx: torch.Tensor, channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = run.data.inputs(idx, run.pm1), run.data.target(idx)
    return (x.contiguous(memory_format=torch.channels_last) if channels_last else x), y


def _micro_batches(idx: torch.Tensor, accumulate: int) -> list[torch.Tensor]:
    return [part for part in idx.tensor_split(accumulate) if len(part)]


def train_step(run, idx: torch.Tensor, terms=None) -> torch.Tensor:
    """Forward/backward over `idx` (this rank's share of one batch) in training.accumulate micro-batches, clip,
    one optimizer and scheduler step. Returns sum(loss x samples) as a 0-d device tensor (never read here).
    Each micro-batch's mean loss is weighted by its share of the batch, so the gradient is the whole batch's."""
    try:
        return take_step(run, idx, terms)
    except torch.cuda.OutOfMemoryError:
        pass  # the probe runs after the except block: its traceback holds the failed step's activations
    raise out_of_memory(run, idx)


def take_step(run, idx: torch.Tensor, terms=None) -> torch.Tensor:
    """train_step without the out-of-memory translation (torch's error passes: gpu_check probes batch sizes).
    `terms` (a term_sums.TermAccumulator) collects the loss's named terms on the device, micro-batch by micro-batch."""
    t = run.config.training
    parts = _micro_batches(idx, t.accumulate)
    channels_last = uses_channels_last(run)
    total = torch.zeros((), device=idx.device)
    run.optimizer.zero_grad(set_to_none=True)
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        # under DDP the gradients are all-reduced once, on the last micro-batch
        sync = nullcontext() if last or not hasattr(run.net, "no_sync") else run.net.no_sync()
        x, y = batch(run, part, channels_last)
        with sync:
            with run.autocast():
                pred = run.net(x).float()
                loss = terms.add(run.loss_fn.terms(pred, y), len(part)) if terms is not None else run.loss_fn(pred, y)
            (loss * (len(part) / len(idx))).backward()
        total = total + loss.detach() * len(part)
    if t.grad_clip:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), t.grad_clip)
    run.optimizer.step()
    run.scheduler.step()
    return total


def largest_fitting(run, idx: torch.Tensor) -> int:
    """The largest micro-batch (halving from len(idx)) whose forward and backward fit; 0 if not even one row.
    Gradients are dropped afterwards: nothing of the probe reaches the weights."""
    size = len(idx) // 2
    while size >= 1:
        run.optimizer.zero_grad(set_to_none=True)
        if run.dev.type == "cuda":
            torch.cuda.empty_cache()
        try:
            x, y = batch(run, idx[:size], uses_channels_last(run))
            with run.autocast():
                run.loss_fn(run.net(x).float(), y).backward()
            return size
        except torch.cuda.OutOfMemoryError:
            size //= 2
        finally:
            run.optimizer.zero_grad(set_to_none=True)
    return 0


def out_of_memory(run, idx: torch.Tensor) -> ConfigError:
    """The one-line error for a step that ran out of GPU memory: the batch size, the micro-batch, the largest
    micro-batch that fits (probed) and the two keys that fix it."""
    t = run.config.training
    micro = -(-len(idx) // t.accumulate)
    fits = largest_fitting(run, idx)
    if fits == 0:
        advice = "not even one row fits: use a smaller model or a larger GPU"
    else:
        advice = (f"the largest that fitted was {fits}: set data.batch_size <= {fits * t.accumulate} or "
                  f"training.accumulate >= {-(-len(idx) // fits)}")
    return ConfigError(f"CUDA out of memory at data.batch_size={run.batch_size} (micro-batch {micro} with "
                       f"training.accumulate={t.accumulate}) on {run.dev}: {advice}")
