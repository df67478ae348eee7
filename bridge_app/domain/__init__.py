"""The Django domain's logic: writes (services), reads (selectors), batched query shapes, child edges."""
