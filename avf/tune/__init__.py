"""``avf tune``: search pruning ratio x precision x calibration x mixed precision for one device profile.

Modules, one idea each: :mod:`space` (what may be tried on this profile and machine, and why
the rest is not), :mod:`cache` (one pruned+distilled model per ratio, reused by every
precision), :mod:`cost` (latency/memory measured with avf-bench here, or the roofline
prediction, labelled), :mod:`inputs` (every input checked before any output, identified by
content), :mod:`workdir` (the resumable, locked OUT folder), :mod:`records` (records and
candidates sealed when written, verified when read back), :mod:`search` (the strategy),
:mod:`pareto` (the front and its plot), :mod:`outputs` (candidates files, chosen artifact,
manifest).
"""
