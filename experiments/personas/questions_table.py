"""Shared extraction questions, grouped by topic ("## topic" lines start a group).

Open questions that any character can answer in role. Ids are "<topic>_<NN>" in file order.
"""

QUESTIONS = """
## self
Who are you, and how would you describe yourself to a stranger?
What does an ordinary day look like for you?
What are you proudest of?
What is something about you that most people get wrong?
How did you become who you are today?
What do you want people to remember about you?
What is your greatest weakness, honestly?
Where do you feel most at home?
What do you do when there is nothing you have to do?
What is a habit you can't seem to break?
What scares you the most?
How have you changed over the years?
What do you find yourself thinking about late at night?
What would you never give up, no matter what?
What is the best compliment anyone has ever paid you?
How do you recharge when you're exhausted?
What is a question you wish people asked you more often?
What makes you laugh?
What is one thing you still don't understand about yourself?
If you could change one thing about your life, what would it be?
What does success mean to you personally?

## values
What is the most important quality a person can have?
Is it ever right to lie? When?
What do you owe to strangers?
How do you decide what is fair?
What would you sacrifice for something you believe in?
Is loyalty always a virtue?
What makes a life well lived?
How do you tell the difference between courage and recklessness?
Should people always follow the rules?
What does it mean to be a good person?
Is it better to be respected or to be liked?
How much should tradition guide what we do today?
What do you think about revenge?
Can you forgive someone who has never apologized?
How should power be used by those who have it?
What is the value of hard work?
Is ambition a good thing?
What do people owe to future generations?
What should never be for sale?
How should we treat those who are weaker than us?
Where do your values come from?

## advice
What advice would you give someone starting something completely new?
How should I deal with a boss who takes credit for my work?
I keep putting off an important project. What should I do?
How can I make better decisions when I'm under pressure?
What should I do when I feel lost?
How do I tell a friend something they don't want to hear?
I'm nervous about speaking in public. Any tips?
How should someone pick themselves up after a big failure?
What's the best way to learn a difficult skill?
How can I stop worrying so much about what others think of me?
My neighbor plays loud music every night. How should I handle it?
What should I look for when choosing a place to live?
How do I know when it's time to quit something?
What would you tell someone who can't sleep?
How should I spend my first paycheck?
How can I become more patient?
I have two job offers and can't decide between them. How should I choose?
How do I apologize properly?
What's the best way to take criticism?
How can I make a small apartment feel like home?
What would you tell someone who feels stuck in a rut?

## facts
Can you explain how the seasons work?
Why is the sky blue?
How do vaccines protect people from disease?
What causes earthquakes?
How does a bill become a law in a democracy?
Why do people dream?
How do airplanes stay in the air?
What is inflation and why does it happen?
How did the printing press change the world?
What is the difference between weather and climate?
How do bees make honey?
Why do leaves change color in autumn?
How does the heart move blood around the body?
What are black holes?
How does a compass work?
How is bread made, and why does it rise?
Why does the Moon have phases?
What makes a rainbow appear?
How do computers store information?
Why did the Western Roman Empire fall?
How do tides work?

## creative
Tell me a short story about a lost key.
Describe a sunset in your own words.
Write a short poem about rain.
Invent a new holiday and explain how people would celebrate it.
Describe the perfect meal.
Tell me a legend about how the mountains were made.
Write a letter to someone who will live a thousand years from now.
Describe a city that no one has ever visited.
Make up a proverb and explain what it means.
Tell me a bedtime story.
Describe the color blue to someone who has never seen it.
Write a toast for a wedding.
Invent a creature and describe its habits.
Tell me about a dream you might have had.
Describe the sound of a forest at night.
Write the opening line of a novel and explain why it works.
Compose a short song about the sea.
Describe your idea of paradise.
Tell me a joke and then explain why it's funny.
Write a eulogy for a houseplant.
Describe a busy market through all five senses.

## emotional
What do you do when you feel lonely?
How do you cope with grief?
What makes you angry, and what do you do with that anger?
When did you last feel truly happy?
How do you handle fear?
What does it feel like to be misunderstood?
How do you comfort someone who is crying?
I'm feeling overwhelmed by everything right now. Can you help?
What is regret, and do you have any?
How do you deal with jealousy?
What brings you peace?
How do you act when you're embarrassed?
I just got some wonderful news and wanted to tell someone. Do you want to hear it?
How do you let go of the past?
What do you do when you feel like giving up?
How do you handle disappointment?
What does hope feel like to you?
Someone I trusted betrayed me. What should I feel?
How do you show someone that you care about them?
What is the hardest goodbye you've ever had to say?
What does it mean to you to feel safe?

## opinions
What do you think of modern technology?
Are people basically good or basically selfish?
What is the best season of the year, and why?
Is social media good or bad for society?
How do cities compare with the countryside?
Does art matter? Why?
What's overrated in the world today?
What's underrated in the world today?
Should children be given more freedom or more structure?
What do you make of celebrities?
Is money the root of all evil?
What do you think of the way people eat nowadays?
Is it better to travel or to stay home?
What do you think about artificial intelligence?
Are rules made to be broken?
What makes a good leader?
What do you think of people who are always in a hurry?
Is competition healthy?
What's your opinion of the news media?
Is honesty always the best policy?
What do you think lies ahead for humanity?

## hypotheticals
If you could live in any era, which would you choose?
What would you do with a million dollars?
If you woke up invisible, what would you do first?
If you had to leave your home forever tomorrow, what would you take with you?
What would you do if you found a wallet full of cash on the street?
If you could ask the universe one question, what would it be?
What would you do if you ruled the world for a day?
If you could speak with any animal, which would you choose and what would you ask?
What would you do if you had only one year left to live?
If you could master one skill instantly, what would it be?
You find a door in your home that you've never seen before. What do you do?
If all the lights in the world went out for a week, how would you spend it?
What would you do if you found out your best friend had been lying to you for years?
If you could send one message to everyone on Earth, what would you say?
If you could undo one event in history, which would it be?
You are stranded on a desert island. How do you survive?
If you could live forever, would you?
What would you do if you were given command of a ship?
If you could see one hour into the future, how would you use it?
A stranger offers you a deal that seems too good to be true. What do you do?
If you had to choose between fame and freedom, which would you pick?

## relationships
What makes a true friend?
How do you handle arguments with people you love?
What do you look for in a partner?
How should parents talk to their children about difficult things?
How do you make new friends?
What's the secret to a long marriage?
How do you deal with people you dislike?
What role does family play in your life?
How do you know you can trust someone?
How do you end a relationship gracefully?
What do you owe your parents?
How do you support a friend who is going through a hard time?
Is it possible to stay friends with an ex?
How do you deal with a jealous friend?
What does loyalty mean in a friendship?
How should people handle a long-distance relationship?
How do you welcome a newcomer into your community?
What do you do when a friend asks for a favor you can't give?
How do you get along with difficult relatives at family gatherings?
What do siblings owe each other?
How can two people who disagree about everything still respect each other?

## work
What makes work meaningful?
How do you handle a task you find boring?
What's the best way to lead a team?
How should someone prepare for a job interview?
What do you do when you make a mistake at work?
How do you balance work and rest?
What's the hardest job you can imagine?
How do you deal with a difficult colleague?
What does it mean to be good at your job?
How should someone ask for a raise?
Is it better to be a specialist or a generalist?
What would you tell someone who hates their job?
How do you stay motivated on a long project?
What makes a good teacher?
How should disagreements between coworkers be settled?
What is the value of an apprenticeship?
What do you do about a deadline you know you can't meet?
What do you think about working from home?
How do you train someone to take over from you?
What is the most important tool of your trade?
What would you do on your first day in charge of an organization?

## philosophy
What is the meaning of life?
Does free will exist?
What happens after we die?
What is consciousness?
Can we ever truly know anything?
Is there such a thing as fate?
What is time?
What makes something beautiful?
Is it possible to be truly selfless?
What is the self?
Are we alone in the universe?
What is justice?
Is suffering necessary?
What is the difference between knowledge and wisdom?
Does the universe have a purpose?
Is it better to know a painful truth or to believe a comforting lie?
What does it mean to be free?
Can a machine ever think?
What is real?
Why is there something rather than nothing?
What is the value of a single life?

## everyday
How do you like to start your mornings?
What's the best way to spend a rainy afternoon?
How do you cook an egg?
What's your favorite food, and why?
How do you keep your home in order?
What do you do on weekends?
How would you plan a picnic?
What's a good way to spend a birthday?
How do you choose what to wear?
What's the best way to get around a busy city?
How do you fix a squeaky door?
What would you pack for a weekend trip?
What do you do when you can't find something you've lost?
How do you save money on groceries?
How do you clean up after a party?
How do you pass the time while waiting in line?
What's the best way to learn your way around a new town?
How would you keep a group of children entertained for an afternoon?
What do you do when it snows?
How do you welcome a guest into your home?
What's your favorite way to end the day?
"""
