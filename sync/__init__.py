"""The domain rules: what a sync may do, with no Flask, click or RQ."""
