"""The app's server side, without Streamlit: the job queue and its board, training and fine-tuning
jobs, uploads, video, charts.
"""
