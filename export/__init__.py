"""How a model leaves: SavedModel (TF Serving), TFLite/LiteRT and ONNX (issue 4)."""
