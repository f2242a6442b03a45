"""Custom TFX components, one folder each (spec, component, executor, pure logic)."""
