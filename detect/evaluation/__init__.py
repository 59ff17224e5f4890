"""COCO box metrics with MMDetection's names and the classwise table."""
