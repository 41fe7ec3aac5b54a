"""placeholder until implemented"""
class InstanceAnnotation: pass
def COCOevalAccumulate(*a): raise NotImplementedError
def COCOevalEvaluateImages(*a): raise NotImplementedError
