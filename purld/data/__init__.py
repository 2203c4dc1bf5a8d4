"""The LightningDataModule: anchors cached once, (prompt, anchor) batches, ranking on the fly."""

from purld.data.datamodule import AnchorDataModule

__all__ = ["AnchorDataModule"]
