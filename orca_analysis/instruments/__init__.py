"""Instruments: the tools measurements measure with, knowing nothing of records or reports.

timing        the timing harness (warm-up, rotated inputs, L2 flush, CUDA events, median and IQR)
device        where timed measurements run: device, dtype, CPU threads and lengths, samples
flop_counter  torch's FlopCounterMode completed for attention and ALiBi, split by component
fvcore_flops  fvcore's FlopCountAnalysis, as shipped and completed
memtrack      torch's MemTracker over a training step, prefill and decode, on fake or real tensors
sdpa          capture x-transformers' attention call, force a backend, read what ran
decode        cached (KV) decoding checked against a full forward, and timed
trainer       one short seeded training run
corpus        the training text, tokenised and cached
heads         silencing attention heads of a trained model
proxy         the training and probe scales, and the proxy-model rule
"""
