"""The model server (`mloop serve`): Open Inference Protocol v2 over HTTP, with collection and feedback."""
