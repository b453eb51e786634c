"""Offline tools for the moderation models: the labelled prompt set and the classifier's training script.

Nothing here runs in the bot; training needs scikit-learn (`pip install imagine[train]`).
"""
