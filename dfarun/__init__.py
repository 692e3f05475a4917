"""dfarun: reproduce Nøkland 2016, "Direct Feedback Alignment Provides Learning in Deep Neural Networks"."""
