"""Identity artefacts: per-user LoRAs (lora_train, lora_select) and face embeddings (face_embedding)."""
