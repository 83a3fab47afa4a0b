"""streamrec.load"""
