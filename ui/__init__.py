"""What the Streamlit app's pages share, by concern: sidebar and loading, display, live streams, jobs."""
