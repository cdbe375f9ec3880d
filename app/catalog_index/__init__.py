"""The catalogue's shape-signature index: built in workers, kept on disk, ranked for a checkpoint.

``build`` describes architectures on meta and reduces them to signatures
(``app.matching.signature``); ``store`` keeps them in a cache directory keyed by the
libraries' versions; ``closest`` ranks them for a checkpoint and re-checks the best few with
the real matching engine.
"""
