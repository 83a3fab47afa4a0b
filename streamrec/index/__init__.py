"""streamrec.index"""
