"""The rules stage: rule files -> RuleSpecs -> vectorized evaluation of ReadingBatches into Signals."""
