"""Test your own workflows' traces across processes: a receiver that decodes what it gets."""
