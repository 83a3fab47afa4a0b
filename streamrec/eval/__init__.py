"""streamrec.eval"""
