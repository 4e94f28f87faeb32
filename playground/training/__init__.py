"""Training: data planning, the one seam from model to loss, one step function per method, the loop, the save and
the one-at-a-time queue."""
