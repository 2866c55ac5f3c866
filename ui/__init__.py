"""Distill Studio's tabs, one module each (FastChat style): `build_<tab>()` lays out the tab's components and
wires the few handlers that belong to it. The engine is reached only through `distill_core.api`; the
figures come from `visuals`. Shared pieces: `common` (per-browser state, formatting, errors, the Learn
prose), `knobs` (the Distill recipe's inputs, generated from DistillConfig), `data` (corpus source and
augmentation), `runview` (what a streaming session or sweep shows)."""
