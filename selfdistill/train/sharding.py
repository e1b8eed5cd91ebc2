"""Reading sharded parameters whole: what a save of the gated adapter needs under FSDP2 and DeepSpeed ZeRO-3.

Under ZeRO-3 a parameter outside its module's forward is an empty partition; under FSDP2 it is a DTensor holding one
shard. :func:`gathered_for_reading` makes the adapter tensors (and the embedding rows the adapter carries) whole
for the block inside it: ZeRO-3 gathers them in place (``deepspeed.zero.GatheredParameters``); FSDP2 needs nothing
here, :func:`selfdistill.models.adapter_files.adapter_weights` gathers each DTensor with ``full_tensor()``. Both are
collectives: every rank enters the block.
"""

from __future__ import annotations

import contextlib

from selfdistill.models.gated_lora import is_adapter_param


@contextlib.contextmanager
def gathered_for_reading(trainer, model):
    """Within: ``model``'s adapter parameters and embeddings are whole on every rank (ZeRO-3); a no-op otherwise."""
    if not trainer.is_deepspeed_enabled:
        yield
        return
    import deepspeed

    params = [p for name, p in model.named_parameters() if is_adapter_param(name)]
    params += [model.get_input_embeddings().weight]
    if model.get_output_embeddings() is not None:
        params.append(model.get_output_embeddings().weight)
    with deepspeed.zero.GatheredParameters(list({id(p): p for p in params}.values()), modifier_rank=None):
        yield
