"""multi_head_attention's engine: which labelled parts of the prompt each generated line relied on."""
