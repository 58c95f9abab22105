"""The Kopf operator: API models, CRD generation, validation, handlers, rendering, cost."""
