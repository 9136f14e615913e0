"""What the purchase path calls after committing an order: validate, then publish."""
