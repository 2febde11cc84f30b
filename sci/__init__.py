"""Pure scoring library for sci-agent: power models and (later) SCI formulas. No I/O."""
