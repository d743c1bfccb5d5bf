"""video_prep"""
