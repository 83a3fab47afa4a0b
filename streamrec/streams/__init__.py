"""streamrec.streams"""
