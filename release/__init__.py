"""fraud-cd release pipeline, in rooms by layer (each imports only the rooms below it):

core <- state <- data, modeling (and the top-level analysis, contracts) <- rollout, serving <- orchestration <- cli
"""
