"""Plain-English meaning of each weight role, shown by ``kconv inspect`` and ``kconv layers``."""

ROLES = {
    "kernel": "weight matrix or filter bank applied to the inputs",
    "bias": "added to the output of each unit",
    "recurrent_kernel": "weights applied to the previous hidden state at each step",
    "depthwise_kernel": "per-channel spatial filters of a depthwise convolution",
    "pointwise_kernel": "1x1 convolution mixing channels after the depthwise step",
    "gamma": "learned per-feature scale applied after normalising",
    "beta": "learned per-feature offset applied after normalising",
    "moving_mean": "running mean of the inputs, used at inference, not trained",
    "moving_variance": "running variance of the inputs, used at inference, not trained",
    "embeddings": "lookup table: one row of features per token id",
    "alpha": "learned slope of the negative part, per element or per shared axis",
    "mean": "stored per-feature mean subtracted from the inputs (preprocessing statistic)",
    "variance": "stored per-feature variance the inputs are divided by (its square root)",
    "count": "number of samples the statistics were adapted on (not used at inference)",
    "kernel_scale": "per-output-channel scale that turns the quantized kernel back into floats",
    "kernel_zero": "int4 sub-channel zero point per group of inputs: float kernel = (q - zero) * scale",
    "g_idx": "int4 sub-channel group index of each input row (which scale/zero applies)",
    "kernel_amax_history": "float8 scaling history of the kernel (delayed scaling)",
    "inputs_scale": "float8 scale applied to the inputs",
    "inputs_amax_history": "float8 scaling history of the inputs",
    "kernel_amax": "float8 maximum absolute value seen for the kernel",
    "outputs_grad_scale": "float8 gradient scale (training only)",
    "outputs_grad_amax_history": "float8 gradient scaling history (training only)",
    "lora_kernel_a": "LoRA down-projection: kernel += lora_a @ lora_b * (alpha / rank)",
    "lora_kernel_b": "LoRA up-projection: kernel += lora_a @ lora_b * (alpha / rank)",
    "query_kernel": "projects the query input to heads x key_dim",
    "query_bias": "bias of the query projection",
    "key_kernel": "projects the key input to heads x key_dim",
    "key_bias": "bias of the key projection",
    "value_kernel": "projects the value input to heads x value_dim",
    "value_bias": "bias of the value projection",
    "output_kernel": "projects the concatenated heads back to the output size",
    "output_bias": "bias of the output projection",
    "scale": "learned scalar multiplying the attention scores",
    "concat_score_weight": "learned vector weighting the additive attention scores",
    "seed_generator_state": "random-number generator state (Keras 3), not a parameter of the function",
}


def describe(role: str) -> str:
    return ROLES.get(role, "")
