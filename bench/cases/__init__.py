"""The five cases of issue 7; each ``run(ctx)`` returns one case section of the results."""
